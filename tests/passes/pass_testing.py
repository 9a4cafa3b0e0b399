"""Helpers shared by the pass tests: build a model from ONNX text, run a pass with the
verifier after it, compare onnxruntime's outputs before and after, and run a pass
over a sample of onnx's node test cases."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnx.parser
import onnxruntime as ort

from edgec.frontend import export_model, import_model
from edgec.ir.core import Model
from edgec.ir.verifier import verify_model
from edgec.passmgr.base import Pass, PassContext, PassResult

# How many of onnx's node test cases each pass test runs in CI; all of them with
# EDGEC_FULL_CONFORMANCE=1.
CONFORMANCE_SAMPLE = 150


def parse(text: str) -> onnx.ModelProto:
    proto = onnx.parser.parse_model(text)
    onnx.checker.check_model(proto)
    return proto


def run_pass(p: Pass, model: Model) -> PassResult:
    """Run ``p`` and assert the verifier finds no error afterwards."""
    result = p.run(model, PassContext())
    errors = [d for d in verify_model(model) if d.is_error]
    assert not errors, "\n".join(str(d) for d in errors)
    return result


def ops(model: Model) -> list[str]:
    return [n.op_type for n in model.graph]


def random_inputs(proto: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    feed = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) else 2 for d in i.shape]
        if i.type == "tensor(float)":
            feed[i.name] = rng.standard_normal(shape).astype(np.float32)
        elif i.type == "tensor(int64)":
            feed[i.name] = rng.integers(-5, 5, shape).astype(np.int64)
        elif i.type == "tensor(bool)":
            feed[i.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            raise NotImplementedError(i.type)
    return feed


def run_ort(proto: onnx.ModelProto, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


def assert_same_outputs(before: onnx.ModelProto, after: Model | onnx.ModelProto, *,
                        rtol: float, atol: float, feed: dict | None = None) -> None:
    """onnxruntime's outputs of ``after`` equal those of ``before``, by output name."""
    if isinstance(after, Model):
        after = export_model(after)
    feed = random_inputs(before) if feed is None else feed
    expected, actual = run_ort(before, feed), run_ort(after, feed)
    assert list(actual) == list(expected)
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=rtol, atol=atol, err_msg=name)


def conformance(p: Pass, *, idempotent: bool = True) -> None:
    """import -> ``p`` -> export reproduces every node test case onnxruntime passes."""
    from edgec.testing import conformance as C

    def step(model: Model) -> None:
        run_pass(p, model)
        if idempotent:
            assert not p.run(model, PassContext()).modified, "second run modified the model"

    cases = C.node_cases()
    if not os.environ.get("EDGEC_FULL_CONFORMANCE"):
        cases = C.sample(cases, CONFORMANCE_SAMPLE)
    report = C.run_cases(cases, C.step_transformation(p.name, step))
    counts = report.counts()
    print(report.render(list_all=False))
    assert not report.defects, report.render(list_all=False)
    assert counts["pass"] > 0.6 * counts["cases"]


def load(proto: onnx.ModelProto) -> Model:
    return import_model(proto, check=True)
