"""Helpers for testing a pass, edgec's own or a plugin's, against onnxruntime.

    from edgec.testing.passes import assert_same_outputs, check_pass, load, parse, run_pass

    TEXT = '''<ir_version: 8, opset_import: ["" : 17]>
    g (float[2,3] x) => (float[2,3] y) { t = Relu(x)  y = Identity(t) }'''

    def test_removes_identity():
        model, result = check_pass(MyPass(), TEXT, rtol=0, atol=0)
        assert op_types(model) == ["Relu"] and result.modified

A test builds its model from ONNX text (`parse`) or with onnx.helper, runs the pass
with the IR verifier after it (`run_pass`), and compares onnxruntime's outputs on the
model before and after the pass (`assert_same_outputs`) with a tolerance the pass's
docstring states. `check_pass` does all of that plus the second-run check (a pass run
twice changes nothing the second time). `conformance` runs the pass over a sample of
onnx's own node test cases. `create` builds a pass from pipeline text through a
registry holding it, as `edgec opt -p` and spec files do, so a test can check the
pass's options and their errors without installing the plugin.

Needs onnxruntime (an edgec dependency); nothing here downloads anything.
"""

from __future__ import annotations

import os
from typing import Iterable

import numpy as np
import onnx
import onnx.parser

from edgec.frontend import export_model, import_model
from edgec.ir.core import Model
from edgec.ir.printer import print_graph
from edgec.ir.verifier import verify_model
from edgec.passmgr.base import Pass, PassContext, PassResult
from edgec.passmgr.manager import parse_and_check
from edgec.passmgr.registry import PassRegistry, contract_problem

# How many of onnx's node test cases `conformance` runs by default; all of them when
# the environment sets EDGEC_FULL_CONFORMANCE=1.
CONFORMANCE_SAMPLE = 150

_NUMPY_OF_ORT = {"tensor(float)": np.float32, "tensor(double)": np.float64,
                 "tensor(float16)": np.float16, "tensor(int64)": np.int64,
                 "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
                 "tensor(bool)": np.bool_}


def parse(text: str) -> onnx.ModelProto:
    """A model from ONNX's text syntax (``onnx.parser``), checked by onnx's checker."""
    proto = onnx.parser.parse_model(text)
    onnx.checker.check_model(proto)
    return proto


def load(proto: onnx.ModelProto) -> Model:
    """The model in edgec's IR (imported with checks on)."""
    return import_model(proto, check=True)


def run_pass(p: Pass, model: Model, ctx: PassContext | None = None) -> PassResult:
    """Run ``p`` on ``model`` and assert the IR verifier finds no error afterwards."""
    result = p.run(model, ctx if ctx is not None else PassContext())
    if result.model is not None:
        model = result.model
    errors = [d for d in verify_model(model) if d.is_error]
    assert not errors, "\n".join(d.render(caret=False) for d in errors)
    return result


def op_types(model: Model) -> list[str]:
    """The op types of the main graph's nodes, in order."""
    return [n.op_type for n in model.graph]


def node_text(model: Model) -> str:
    """The main graph's nodes in IR text form, one per line (initializers left out)."""
    lines = print_graph(model.graph).splitlines()
    return "\n".join(line.strip() for line in lines[1:-1] if not line.strip().startswith("init "))


def random_inputs(proto: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """A feed for every input of ``proto``: standard normal floats, small integers (-5..4),
    random booleans; symbolic dimensions are 2."""
    session = _session(proto)
    rng = np.random.default_rng(seed)
    feed = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) else 2 for d in i.shape]
        dtype = _NUMPY_OF_ORT.get(i.type)
        if dtype is None:
            raise NotImplementedError(f"random_inputs: input '{i.name}' is {i.type}; "
                                      "pass a feed of your own")
        if dtype == np.bool_:
            feed[i.name] = rng.integers(0, 2, shape).astype(bool)
        elif np.issubdtype(dtype, np.integer):
            feed[i.name] = rng.integers(-5 if np.issubdtype(dtype, np.signedinteger) else 0, 5,
                                        shape).astype(dtype)
        else:
            feed[i.name] = rng.standard_normal(shape).astype(dtype)
    return feed


def run_ort(proto: onnx.ModelProto, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """onnxruntime's (CPU) outputs of ``proto`` on ``feed``, by output name."""
    session = _session(proto)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


def assert_same_outputs(before: onnx.ModelProto, after: Model | onnx.ModelProto, *,
                        rtol: float, atol: float, feed: dict | None = None) -> None:
    """onnxruntime's outputs of ``after`` equal those of ``before`` within ``rtol`` and
    ``atol``, output by output (same names, same order); ``feed`` defaults to
    `random_inputs` of ``before``."""
    if isinstance(after, Model):
        after = export_model(after)
    feed = random_inputs(before) if feed is None else feed
    expected, actual = run_ort(before, feed), run_ort(after, feed)
    assert list(actual) == list(expected), f"outputs {list(actual)} != {list(expected)}"
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=rtol, atol=atol,
                                   err_msg=name)


def check_pass(p: Pass, model: str | onnx.ModelProto, *, rtol: float, atol: float,
               feed: dict | None = None, idempotent: bool = True,
               ctx: PassContext | None = None) -> tuple[Model, PassResult]:
    """Run ``p`` on ``model`` (ONNX text or a proto) with the verifier after it, assert
    onnxruntime's outputs are unchanged within the tolerance and, with ``idempotent``,
    that a second run modifies nothing. Returns the rewritten model and the first
    run's result."""
    proto = parse(model) if isinstance(model, str) else model
    ir = load(proto)
    result = run_pass(p, ir, ctx)
    if result.model is not None:
        ir = result.model
    assert_same_outputs(proto, ir, rtol=rtol, atol=atol, feed=feed)
    if idempotent:
        again = run_pass(p, ir, ctx)
        assert not again.modified, f"a second run of {p.name} modified the model: {again.stats}"
    return ir, result


def conformance(p: Pass, *, idempotent: bool = True,
                sample: int | None = CONFORMANCE_SAMPLE) -> None:
    """Import -> ``p`` -> export must reproduce every one of onnx's node test cases that
    onnxruntime passes (``sample`` of them, chosen deterministically; all with
    ``sample=None`` or EDGEC_FULL_CONFORMANCE=1), and most must pass."""
    from edgec.testing import conformance as cases_module

    def step(model: Model) -> None:
        run_pass(p, model)
        if idempotent:
            assert not p.run(model, PassContext()).modified, "second run modified the model"

    cases = cases_module.node_cases()
    if sample is not None and not os.environ.get("EDGEC_FULL_CONFORMANCE"):
        cases = cases_module.sample(cases, sample)
    report = cases_module.run_cases(cases, cases_module.step_transformation(p.name, step))
    counts = report.counts()
    print(report.render(list_all=False))
    assert not report.defects, report.render(list_all=False)
    assert counts["pass"] > 0.6 * counts["cases"]


def create(text: str, passes: Iterable[type[Pass]]) -> list[Pass]:
    """The passes of pipeline ``text`` as `edgec opt -p` would build them, from a
    registry holding only ``passes`` (each checked against the pass contract, as the
    entry-point loader does). Bad options raise `edgec.diagnostics.UsageError`, whose
    diagnostic points into ``text``."""
    registry = PassRegistry()
    for cls in passes:
        problem = contract_problem(cls.name, cls)
        assert problem is None, f"{cls.__name__} does not fit the pass contract: {problem}"
        registry.register(cls, source="test")
    created: list[Pass] = []

    def walk(pipeline) -> None:
        for element in pipeline:
            if element.children is not None:
                walk(element.children)
            else:
                created.append(registry.create(element, text))

    walk(parse_and_check(text, registry))
    return created


def initializer_text(name: str, array) -> str:
    """An initializer in ONNX text syntax, ``float[2,3] w = {…}``, for a model's
    ``<…>`` initializer list."""
    array = np.asarray(array)
    kind = {np.dtype(np.float32): "float", np.dtype(np.int64): "int64",
            np.dtype(np.int8): "int8", np.dtype(np.uint8): "uint8"}[array.dtype]
    dims = ",".join(str(d) for d in array.shape)
    values = ", ".join(repr(float(v)) if kind == "float" else str(int(v))
                       for v in array.reshape(-1))
    shape = f"[{dims}]" if array.ndim else ""
    return f"{kind}{shape} {name} = {{{values}}}"


def random_weights(*shape: int, seed: int = 0) -> np.ndarray:
    """float32 weights drawn uniformly from [-1, 1)."""
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def _session(proto: onnx.ModelProto):
    import onnxruntime as ort

    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
