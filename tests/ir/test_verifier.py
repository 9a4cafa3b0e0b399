"""The verifier names the offending node for each broken invariant."""

from __future__ import annotations

from edgec.ir import Graph, Model, Node, Value
from edgec.ir.parser import parse_graph, parse_model
from edgec.ir.verifier import verify_graph, verify_model


def messages(diagnostics) -> list[str]:
    return [f"{d.location.obj}: {d.message}" for d in diagnostics if d.is_error]


def test_a_valid_model_has_no_diagnostics():
    m = parse_model("""
    model {ir_version = 8, opset_import = {"": 17}} {
      graph @g(%x: f32[2]) -> (%y) {
        "r": %y = Relu(%x)
      }
    }
    """)
    assert verify_model(m) == []


def test_undefined_input():
    g = Graph("g")
    stray = Value("ghost")
    g.append(Node("Relu", [stray], name="r", outputs=[Value("y")]))
    (msg,) = messages(verify_graph(g))
    assert "node 'r' (Relu)" in msg and "'ghost'" in msg and "defines" in msg


def test_unsorted_nodes():
    g = parse_graph("graph @g(%x: f32) -> (%b) {\n  \"n\": %b = Neg(%a)\n  %a = Relu(%x)\n}")
    (msg,) = messages(verify_graph(g))
    assert "node 'n' (Neg)" in msg and "topological order" in msg


def test_cycle():
    g = parse_graph("graph @g(%x: f32) -> (%b) {\n  \"p\": %a = Add(%x, %b)\n"
                    "  \"q\": %b = Neg(%a)\n}")
    msgs = messages(verify_graph(g))
    assert any("cycle" in m and "node 'p' (Add)" in m and "node 'q' (Neg)" in m for m in msgs)


def test_duplicate_definition():
    g = Graph("g", inputs=[Value("x")])
    g.append(Node("Relu", [g.inputs[0]], name="dup", outputs=[Value("x")]))
    msgs = messages(verify_graph(g))
    assert any("'x' is defined twice" in m and "node 'dup' (Relu)" in m for m in msgs)


def test_unknown_domain():
    m = parse_model("""
    model {ir_version = 8, opset_import = {"": 17}} {
      graph @g(%x: f32) -> (%y) {
        "c": %y = com.acme::Magic(%x)
      }
    }
    """)
    (d,) = verify_model(m)
    assert "node 'c' (com.acme::Magic)" in d.location.obj
    assert "domain 'com.acme'" in d.message


def test_broken_use_list():
    g = parse_graph("graph @g(%x: f32) -> (%y) {\n  \"r\": %y = Relu(%x)\n}")
    x = g.inputs[0]
    relu = g.nodes[0]
    x._uses.clear()  # what a pass that bypasses the mutation API would leave
    msgs = messages(verify_graph(g))
    assert any("node 'r' (Relu)" in m and "missing from that value's use list" in m
               for m in msgs)
    x._uses[(relu, 0)] = None
    stale = Node("Neg", [x], name="gone", outputs=[Value("z")])
    stale._drop_input_uses()
    x._uses[(stale, 0)] = None
    msgs = messages(verify_graph(g))
    assert any("node 'gone' (Neg)" in m and "does not read it" in m for m in msgs)


def test_subgraph_problems_name_the_subgraph_and_node():
    m = parse_model("""
    model {ir_version = 8, opset_import = {"": 17}} {
      graph @g(%c: bool, %x: f32) -> (%y) {
        %y = If(%c) {
          then_branch = graph @then() -> (%t) {
            "inner": %t = acme::Op(%x)
          },
          else_branch = graph @else() -> (%x) {
          }
        }
      }
    }
    """)
    (d,) = verify_model(m)
    assert "node 'inner' (acme::Op) in subgraph 'then'" in d.location.obj


def test_undefined_graph_output():
    g = Graph("g")
    g.outputs.append(Value("nowhere"))
    (msg,) = messages(verify_graph(g))
    assert "graph output 'nowhere'" in msg


def test_model_functions_are_verified():
    m = parse_model("""
    model {ir_version = 8, opset_import = {"": 17, "local": 1}} {
      graph @g(%x: f32) -> (%y) {
        %y = local::F(%x)
      }
      func local::F(%a) -> (%b) {
        "bad": %b = nowhere::Op(%a)
      }
    }
    """)
    msgs = messages(verify_model(m))
    assert any("node 'bad'" in m and "function 'local.F'" in m for m in msgs)
    assert isinstance(m, Model)
