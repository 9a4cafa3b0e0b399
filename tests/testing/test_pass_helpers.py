"""edgec.testing.passes catches what it is for: changed numerics, a pass that is not
idempotent, a broken IR, a bad option, a class that is not a pass."""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from edgec.diagnostics import UsageError
from edgec.passes.dce import DeadCodeElimination
from edgec.passmgr import Pass, PassResult
from edgec.testing.passes import (assert_same_outputs, check_pass, create, initializer_text, load,
                                  op_types, parse, random_inputs, random_weights, run_pass)

TEXT = """<ir_version: 8, opset_import: ["" : 17]>
g (float[2,3] x) => (float[2,3] y) {
  dead = Sigmoid(x)
  t = Relu(x)
  y = Neg(t)
}"""


@dataclass(frozen=True)
class ReluToAbs(Pass):
    """Wrong on purpose: Relu -> Abs."""

    name: ClassVar[str] = "relu-to-abs"

    def run(self, model, ctx):
        changed = 0
        for node in model.graph:
            if node.op_type == "Relu":
                node.op_type = "Abs"
                changed += 1
        return PassResult(bool(changed))


@dataclass(frozen=True)
class Rename(Pass):
    """Not idempotent on purpose: appends to every node's name."""

    name: ClassVar[str] = "rename"
    suffix: str = "_x"

    def run(self, model, ctx):
        for node in model.graph:
            node.name = (node.name or node.op_type) + self.suffix
        return PassResult(True)


def test_check_pass_accepts_a_correct_pass():
    model, result = check_pass(DeadCodeElimination(), TEXT, rtol=0, atol=0)
    assert result.modified and op_types(model) == ["Relu", "Neg"]


def test_changed_numerics_are_caught():
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        check_pass(ReluToAbs(), TEXT, rtol=1e-6, atol=1e-6)


def test_a_pass_that_changes_the_model_again_is_caught():
    with pytest.raises(AssertionError, match="second run of rename modified the model"):
        check_pass(Rename(), TEXT, rtol=0, atol=0)
    check_pass(Rename(), TEXT, rtol=0, atol=0, idempotent=False)


def test_run_pass_verifies_the_ir():
    @dataclass(frozen=True)
    class UnimportedDomain(Pass):
        name: ClassVar[str] = "unimported-domain"

        def run(self, model, ctx):
            next(n for n in model.graph if n.op_type == "Relu").domain = "com.example"
            return PassResult(True)

    with pytest.raises(AssertionError, match="uses domain 'com.example'"):
        run_pass(UnimportedDomain(), load(parse(TEXT)))


def test_create_builds_passes_from_pipeline_text_and_checks_them():
    passes = create("rename{suffix=_y},fixed-point(relu-to-abs)", [Rename, ReluToAbs])
    assert passes == [Rename(suffix="_y"), ReluToAbs()]
    with pytest.raises(UsageError) as error:
        create("rename{sufix=_y}", [Rename])
    assert "did you mean 'suffix'?" in error.value.diagnostics[0].notes
    with pytest.raises(AssertionError, match="does not fit the pass contract"):
        create("rename", [type("NotAPass", (), {"name": "rename"})])


def test_text_and_input_helpers():
    w = random_weights(2, 3)
    assert w.dtype == np.float32 and w.shape == (2, 3) and np.all(np.abs(w) <= 1)
    assert initializer_text("w", np.array([[1, 2]], np.int64)) == "int64[1,2] w = {1, 2}"
    proto = parse(TEXT)
    feed = random_inputs(proto)
    assert feed["x"].shape == (2, 3) and feed["x"].dtype == np.float32
    assert_same_outputs(proto, load(proto), rtol=0, atol=0, feed=feed)
