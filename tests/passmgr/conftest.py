"""Small passes and models for pass-manager tests."""

from dataclasses import dataclass, field
from typing import ClassVar

import pytest
from onnx import TensorProto, helper

from edgec.frontend import import_model
from edgec.ir.core import Node
from edgec.passmgr import Pass, PassRegistry, PassResult


@dataclass(frozen=True)
class CountNodes(Pass):
    """Counts nodes; changes nothing."""

    name: ClassVar[str] = "count-nodes"
    scale: int = field(default=1, metadata={"help": "multiply the count"})
    tags: tuple[str, ...] = ()
    ratio: float = 0.5
    strict: bool = False

    def run(self, model, ctx):
        return PassResult(False, {"nodes": len(model.graph) * self.scale})


@dataclass(frozen=True)
class DropOneIdentity(Pass):
    """Removes one Identity node per run (so a fixed point needs several rounds)."""

    name: ClassVar[str] = "drop-one-identity"

    def run(self, model, ctx):
        for node in model.graph:
            if node.op_type == "Identity":
                model.graph.replace_value(node.output, node.inputs[0])
                model.graph.remove(node)
                return PassResult(True, {"removed": 1})
        return PassResult(False)


@dataclass(frozen=True)
class BreakIR(Pass):
    """Leaves a node reading a value nobody defines (a buggy pass)."""

    name: ClassVar[str] = "break-ir"

    def run(self, model, ctx):
        from edgec.ir.core import Value
        node = next(iter(model.graph))
        node.set_input(0, Value("ghost"))
        return PassResult(True)


@dataclass(frozen=True)
class Crash(Pass):
    """Raises, like a pass with a bug."""

    name: ClassVar[str] = "crash"

    def run(self, model, ctx):
        raise RuntimeError("boom")


@pytest.fixture
def registry():
    r = PassRegistry()
    for cls in (CountNodes, DropOneIdentity, BreakIR, Crash):
        r.register(cls)
    return r


def identity_chain(n: int = 3):
    nodes = [helper.make_node("Identity", ["x" if i == 0 else f"t{i - 1}"], [f"t{i}"])
             for i in range(n)]
    nodes.append(helper.make_node("Relu", [f"t{n - 1}"], ["y"]))
    graph = helper.make_graph(nodes, "chain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def chain_model():
    return import_model(identity_chain())
