"""fuse's softmax pattern: Exp(x - max x) / Σ Exp(x - max x) -> Softmax, as exporters
write it (jax2tf with an Identity on the max, axes as attributes or inputs), checked
against onnxruntime on the model before the pass (rtol = atol = 1e-6), and the cases
that must not fire."""

import numpy as np

from fuse_testing import fuse

from edgec.passes.fuse import Fuse
from edgec.testing.passes import load, node_text, op_types, parse, run_pass

TOL = {"rtol": 1e-6, "atol": 1e-6}
# Logits large enough that the unstable form would overflow: the stable one must not.
FEED = {"x": (np.random.default_rng(0).standard_normal((2, 5, 7)) * 30).astype(np.float32)}


def softmax_text(opset: int, axis: int = -1, *, sum_axis: int | None = None,
                 identity: bool = False, keepdims: int = 1, outputs: str = "float[2,5,7] y",
                 stable: bool = True) -> str:
    sum_axis = axis if sum_axis is None else sum_axis
    # ReduceMax takes axes as an input from opset 18, ReduceSum from 13.
    max_axes = f"<axes = [{axis}], keepdims = {keepdims}>" if opset < 18 else f"<keepdims = {keepdims}>"
    max_in = "(x)" if opset < 18 else "(x, max_axes)"
    sum_attr = f"<axes = [{sum_axis}], keepdims = {keepdims}>" if opset < 13 else f"<keepdims = {keepdims}>"
    sum_in = "(e)" if opset < 13 else "(e, sum_axes)"
    inits = [f"int64[1] max_axes = {{{axis}}}", f"int64[1] sum_axes = {{{sum_axis}}}"]
    body = (f"m = ReduceMax {max_axes} {max_in}\n"
            + ("g = Identity(m)\n" if identity else "")
            + (f"d = Sub(x, {'g' if identity else 'm'})\ne = Exp(d)\n" if stable else "e = Exp(x)\n")
            + f"s = ReduceSum {sum_attr} {sum_in}\ny = Div(e, s)")
    return f"""<ir_version: 8, opset_import: ["" : {opset}]>
        g (float[2,5,7] x) => ({outputs}) <{", ".join(inits)}> {{
            {body}
        }}"""


def test_softmax_over_the_last_axis_becomes_softmax():
    for opset in (13, 17, 18):
        model, _ = fuse(softmax_text(opset), expect={"softmax": 1}, feed=FEED, **TOL)
        assert node_text(model) == "%y: f32[2,5,7] = Softmax(%x) {axis = 2}"


def test_jax2tf_stop_gradient_identity_on_the_max_is_fused_too():
    model, _ = fuse(softmax_text(13, identity=True), expect={"softmax": 1}, feed=FEED, **TOL)
    assert op_types(model) == ["Softmax"]


def test_a_middle_axis_fuses_from_opset_13_and_not_before():
    model, _ = fuse(softmax_text(13, axis=1), expect={"softmax": 1}, feed=FEED, **TOL)
    assert node_text(model) == "%y: f32[2,5,7] = Softmax(%x) {axis = 1}"
    # Before 13, Softmax(axis=1) normalises over axes 1 and 2 together.
    fuse(softmax_text(11, axis=1), expect={}, feed=FEED, **TOL)
    model, _ = fuse(softmax_text(11, axis=2), expect={"softmax": 1}, feed=FEED, **TOL)
    assert op_types(model) == ["Softmax"]


def test_what_is_not_a_softmax_is_left_alone():
    cases = {
        "different axes": softmax_text(13, axis=2, sum_axis=1),
        "keepdims 0": softmax_text(13, keepdims=0, outputs="float[2,5,7] y"),
        "the unstable form": softmax_text(13, stable=False),
        "an intermediate returned": softmax_text(13, outputs="float[2,5,7] y, float[2,5,7] e"),
    }
    for why, text in cases.items():
        if why == "keepdims 0":
            # Broadcasting a reduced [2,5] against [2,5,7] is invalid: check without running.
            model = load(parse(text))
            assert not run_pass(Fuse(patterns=("softmax",)), model).stats["softmax"], why
            continue
        model, _ = fuse(text, expect={}, feed=FEED, patterns=("softmax",), **TOL)
        assert "Softmax" not in op_types(model), why


def test_the_jax2tf_corpus_cnn_gets_one_softmax_and_matches_onnxruntime():
    from edgec.testing.corpus import MODELS
    from edgec.passes.infer_shapes import InferShapes

    corpus = MODELS["jax2tf-cnn"]()
    inputs, _ = corpus.data(4, 3)
    model = load(corpus.model)
    run_pass(InferShapes(), model)  # as the default pipeline does before fuse: x's type
    result = run_pass(Fuse(), model)
    assert result.stats["softmax"] == 1
    ops = op_types(model)
    assert "Softmax" in ops and not {"ReduceMax", "Exp", "ReduceSum"} & set(ops)
    from edgec.testing.passes import assert_same_outputs

    assert_same_outputs(corpus.model, model, feed={"x": inputs["x"]}, **TOL)
