"""edgec.rewrite: patterns bind values, constants and nodes; commutative ops match both
orders; the driver refuses matches whose intermediates are read outside them."""

import numpy as np

from edgec.ir.parser import parse_model
from edgec.rewrite import Const, Op, RewriteDriver, Rule, Var

MODEL = """
model {ir_version = 8, opset_import = {"": 17}} {
  graph @g(%x: f32[3]) -> (%y: f32[3], %z: f32[3]) {
    init %k: f32[] = dense<[2.0]>
    "s": %s = Sigmoid(%x)
    "m": %y = Mul(%s, %x)
    "n": %t = Neg(%x)
    "a": %z = Add(%k, %t)
  }
}
"""


def test_commutative_match_binds_the_same_value_twice():
    model = parse_model(MODEL)
    mul = model.graph.nodes[1]
    match = Op("Mul", Var("x"), Op("Sigmoid", Var("x"), name="sig"), commutative=True).match(mul)
    assert match is not None and match["x"].name == "x" and match.nodes["sig"].op_type == "Sigmoid"
    assert [n.op_type for n in match.covered] == ["Sigmoid", "Mul"]
    # Not commutative: Sigmoid is the first operand, so no match.
    assert Op("Mul", Var("x"), Op("Sigmoid", Var("x"))).match(mul) is None


def test_const_binds_arrays_and_checks_them():
    model = parse_model(MODEL)
    add = model.graph.nodes[3]
    match = Op("Add", Op("Neg", Var("x")), Const("k"), commutative=True).match(add)
    assert match is not None and float(match.constants["k"]) == 2.0
    assert Op("Add", Op("Neg", Var("x")), Const("k", lambda a: a == 3), commutative=True).match(add) is None


def _neg_add_rule(counted: list):
    def check(match, model):
        return None

    def rewrite(match, b):
        counted.append(1)
        return b.op("Sub", [match["k"], match["x"]])
    # k + (-x) -> k - x
    return Rule("neg-add", Op("Add", Op("Neg", Var("x")), Const("k"), commutative=True), check, rewrite)


def test_driver_rewrites_and_counts():
    model = parse_model(MODEL)
    counted: list = []
    driver = RewriteDriver([_neg_add_rule(counted)], model)
    assert driver.run(model.graph) == 1
    assert [n.op_type for n in model.graph] == ["Sigmoid", "Mul", "Sub"]
    assert model.graph.outputs[1].name == "z" and driver.counts["neg-add"] == 1


def test_driver_refuses_intermediates_read_outside_the_match():
    text = MODEL.replace('-> (%y: f32[3], %z: f32[3])', '-> (%y: f32[3], %z: f32[3], %t)')
    model = parse_model(text)
    driver = RewriteDriver([_neg_add_rule([])], model)
    assert driver.run(model.graph) == 0
    assert any("graph output" in reason for reason in driver.rejected)


def test_driver_rewrites_a_root_that_a_subgraph_returns_and_retargets_the_return():
    model = parse_model("""
    model {ir_version = 8, opset_import = {"": 17}} {
      graph @g(%x: f32[3], %c: bool) -> (%y: f32[3]) {
        init %k: f32[] = dense<[2.0]>
        "n": %t = Neg(%x)
        "a": %z = Add(%k, %t)
        %y = If(%c) {
          then_branch = graph @then() -> (%z) {
          },
          else_branch = graph @else() -> (%x) {
          }
        }
      }
    }
    """)
    driver = RewriteDriver([_neg_add_rule([])], model)
    assert driver.run(model.graph) == 1
    sub, if_node = model.graph.nodes
    assert sub.op_type == "Sub" and if_node.attr("then_branch").outputs[0] is sub.output
    # Intermediates returned by a subgraph still stop a match: the rewrite removes them.
    text = """
    model {ir_version = 8, opset_import = {"": 17}} {
      graph @g(%x: f32[3], %c: bool) -> (%y: f32[3]) {
        init %k: f32[] = dense<[2.0]>
        "n": %t = Neg(%x)
        "a": %z = Add(%k, %t)
        %y = If(%c) {
          then_branch = graph @then() -> (%t) {
          },
          else_branch = graph @else() -> (%z) {
          }
        }
      }
    }
    """
    model = parse_model(text)
    driver = RewriteDriver([_neg_add_rule([])], model)
    assert driver.run(model.graph) == 0 and any("graph output" in r for r in driver.rejected)
