"""int8 follows the target: targets say how their int8 kernels accumulate, the
quantizers take the weight range from that, and accuracy is scored with the target's
arithmetic (issue 16).

Numerics are checked against onnxruntime on the model before the pass (tolerances
stated where they are asserted) and, for the exact scoring path, against integer
arithmetic done in numpy.
"""

import json
from pathlib import Path
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgec
from edgec import machine
from edgec.dsl import check_text, host
from edgec.frontend import export_model, import_model
from edgec.metrics import evaluate
from edgec.passes.quantize_dynamic import QuantizeDynamic
from edgec.passes.quantize_int8 import QuantizeInt8
from edgec.passmgr import PassContext, PassManager
from edgec.planner.search import configurations
from edgec.quantization import arithmetic
from edgec.quantization.arithmetic import exact_session, largest_int8_weight, scoring
from edgec.quantization.observe import run, session
from edgec.testing.models import mlp

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
DIGITS = os.path.join(ROOT, "spec_examples", "digits.onnx")
DATA = os.path.join(ROOT, "spec_examples", "data")
PASSES = {"quantize-int8", "convert-fp16", "prune-channels", "prune-unstructured"}
VNNI_FLAGS = frozenset({"avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni"})
AVX2_FLAGS = frozenset({"avx", "avx2", "fma", "f16c"})


def spec_of(text: str):
    spec, diagnostics = check_text(text, os.path.join(ROOT, "spec_examples", "t.edge"))
    assert spec is not None, [d.render() for d in diagnostics]
    return spec


@pytest.fixture
def fake_host(monkeypatch):
    """Make this machine an x86-64 CPU with the given /proc/cpuinfo flags whose
    onnxruntime probe gives ``measured`` (None: cannot run, the flags decide)."""
    def fake(flags, measured=None):
        monkeypatch.setattr(host, "_flags", lambda: frozenset(flags))
        monkeypatch.setattr(host, "architecture", lambda: "x86_64")
        monkeypatch.setattr(host, "onnxruntime_saturates", lambda: measured)
        monkeypatch.setattr(machine, "onnxruntime_saturates", lambda: measured)
        monkeypatch.setattr(host, "llvm_cpu", lambda: "generic")
    return fake


def digits_samples():
    return dict(np.load(os.path.join(DATA, "digits-calibration.npz")))


def int8_weights(proto: onnx.ModelProto) -> int:
    largest = largest_int8_weight(proto)
    assert largest is not None
    return largest


# --------------------------------------------------------------------------- the target field


def test_each_target_says_how_its_int8_kernels_accumulate(fake_host):
    assert spec_of("target raspberry-pi-4\n").target.int8_accumulation == "int32"
    assert spec_of("target jetson-orin-nano\n").target.int8_accumulation == "int32"
    assert spec_of("target generic-armv7\n").target.int8_accumulation == "int32"
    v3 = spec_of("target x86-64-v3\n").target
    assert v3.int8_accumulation == "int16-saturating" and v3.int8_saturates
    # The x86 default follows the features: a v3 CPU with AVX-VNNI does not saturate.
    vnni = spec_of('target x86-64-v3 { features "+avx2", "+fma", "+avxvnni" }\n').target
    assert vnni.int8_accumulation == "int32"
    assert spec_of("target x86-64-v3 { int8-accumulation int32 }\n").target.int8_accumulation == "int32"
    # An inline x86 target without the field gets the architecture's default.
    inline = spec_of('target { arch x86_64\n cores 2\n features "+avx2" }\n').target
    assert inline.int8_accumulation == "int16-saturating"
    # The resolved spec writes the field out and parses back to the same target.
    text = spec_of("target raspberry-pi-4\n").to_text()
    assert "int8-accumulation int32" in text
    assert spec_of(text).target == spec_of("target raspberry-pi-4\n").target


def test_a_wrong_accumulation_is_a_located_error():
    spec, diagnostics = check_text("target x86-64-v3 { int8-accumulation int16 }\n", "t.edge")
    assert spec is None
    message = diagnostics[0].render()
    assert "unknown int8-accumulation 'int16'" in message and "int16-saturating" in message


def test_host_detects_accumulation_from_flags_and_measurement(fake_host):
    fake_host(VNNI_FLAGS)
    assert spec_of("target host\n").target.int8_accumulation == "int32"
    fake_host(AVX2_FLAGS)
    assert spec_of("target host\n").target.int8_accumulation == "int16-saturating"
    # The measurement decides over the flags: onnxruntime's kernels are what run.
    fake_host(VNNI_FLAGS, measured=True)
    assert spec_of("target host\n").target.int8_accumulation == "int16-saturating"
    fake_host(AVX2_FLAGS, measured=False)
    assert spec_of("target host\n").target.int8_accumulation == "int32"


def test_the_probe_on_this_machine_agrees_with_a_fresh_measurement():
    """The probe's (cached) answer is a fresh measurement's: exact int32 sums leave
    fp32 rounding (~1e-7 relative here, an AVX-512 VNNI EPYC); saturated pair sums
    are off by far more than 1e-3. Where flags and measurement disagree (onnxruntime
    not using VNNI), the measurement is what `host` reports."""
    error = machine.int8_matmul_error()
    assert error < 1e-5 or error > 1e-3  # nothing in between: exact or saturated
    assert machine.onnxruntime_saturates() == (error > 1e-3)


# --------------------------------------------------------------------------- weight range per target


@pytest.mark.parametrize("target, flags, bits", [
    ("host", VNNI_FLAGS, 8),           # VNNI: vpdpbusd accumulates in int32
    ("host", AVX2_FLAGS, 7),           # vpmaddubsw: int16 pair sums saturate
    ("x86-64-v3", VNNI_FLAGS, 7),      # the level guarantees no VNNI, whatever the host has
    ("raspberry-pi-4", VNNI_FLAGS, 8),
    ("jetson-orin-nano", AVX2_FLAGS, 8),
])
def test_the_chosen_pipeline_quantizes_with_the_weight_range_the_target_needs(
        fake_host, target, flags, bits):
    fake_host(flags)
    spec = spec_of(f"target {target}\noptimize {{\n  precision int8\n  backend ort\n}}\n")
    configs, _ = configurations(spec, spec.target, "ort", PASSES)
    assert configs and all(f"reduce-range={'true' if bits == 7 else 'false'}" in c.passes
                           for c in configs)
    proto = onnx.load(DIGITS)
    model = import_model(proto)
    context = PassContext(spec=spec, target=spec.target, calibration_data=digits_samples())
    run_ = PassManager(configs[0].passes, context=context, verify_each=True).run(model)
    quantized = export_model(run_.model)
    assert int8_weights(quantized) == (127 if bits == 8 else 63)
    assert run_.records[0].stats["weight-bits"] == bits
    # Against onnxruntime on the model before the pass: int8 with per-channel weights
    # keeps the digits logits within 35 dB (7-bit) / 40 dB (8-bit) SQNR.
    samples = dict(np.load(os.path.join(DATA, "digits.npz")))
    sqnr = evaluate("sqnr", 0, run(proto, samples), run(quantized, samples)).value
    assert sqnr >= (40 if bits == 8 else 35), sqnr


def test_reduce_range_unset_follows_the_context_target_and_explicit_wins(fake_host):
    fake_host(AVX2_FLAGS)
    pi, v3 = spec_of("target raspberry-pi-4\n").target, spec_of("target x86-64-v3\n").target
    proto = onnx.load(DIGITS)
    cases = [(QuantizeInt8(), pi, 127), (QuantizeInt8(), v3, 63), (QuantizeInt8(), None, 63),
             (QuantizeInt8(reduce_range=True), pi, 63), (QuantizeInt8(reduce_range=False), v3, 127)]
    for quantizer, target, largest in cases:
        model = import_model(proto)
        result = quantizer.run(model, PassContext(target=target, calibration_data=digits_samples()))
        assert int8_weights(export_model(model)) == largest, (quantizer, target)
        assert result.stats["weight-bits"] == (8 if largest == 127 else 7)


@pytest.mark.parametrize("fmt", ["contrib", "standard"])
def test_quantize_dynamic_follows_the_target(fake_host, fmt):
    fake_host(VNNI_FLAGS)
    proto = mlp(batch=4)
    x = {"input": np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)}
    sqnr = {}
    for name in ("raspberry-pi-4", "x86-64-v3"):
        model = import_model(proto)
        result = QuantizeDynamic(format=fmt).run(model, PassContext(target=spec_of(f"target {name}\n").target))
        quantized = export_model(model)
        assert result.stats["weight-bits"] == (8 if name == "raspberry-pi-4" else 7)
        assert int8_weights(quantized) == (127 if name == "raspberry-pi-4" else 63)
        sqnr[name] = evaluate("sqnr", 0, run(proto, x), run(quantized, x)).value
    # Against onnxruntime on the model before the pass: >= 30 dB either way, and the
    # eighth bit is worth something (activations dominate the noise: >= 0.5 dB).
    assert min(sqnr.values()) >= 30 and sqnr["raspberry-pi-4"] >= sqnr["x86-64-v3"] + 0.5, sqnr


# --------------------------------------------------------------------------- the exact scoring path


def _probe_model(bits: int, k: int = 128, n: int = 64, fmt: str = "qdq"):
    """An int8 MatMul whose weights are all of one sign and near full range: with u8
    activations near 255, every adjacent pair overflows an int16 sum."""
    rng = np.random.default_rng(3)
    qmax = 2 ** (bits - 1) - 1
    q = rng.integers(qmax // 2 + 1, qmax + 1, (k, n)).astype(np.int8)
    scale = np.full(n, 0.01, np.float32)
    inits = [numpy_helper.from_array(q, "wq"), numpy_helper.from_array(scale, "ws"),
             numpy_helper.from_array(np.zeros(n, np.int8), "wz")]
    if fmt == "qdq":
        inits += [numpy_helper.from_array(np.array(4 / 255, np.float32), "xs"),
                  numpy_helper.from_array(np.array(0, np.uint8), "xz")]
        nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
                 helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
                 helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=1),
                 helper.make_node("MatMul", ["xd", "wd"], ["y"])]
        domains = [helper.make_opsetid("", 13)]
    else:
        nodes = [helper.make_node("DynamicQuantizeMatMul", ["x", "wq", "ws", "wz"], ["y"],
                                  domain="com.microsoft")]
        domains = [helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)]
    graph = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16, n])], inits)
    proto = helper.make_model(graph, opset_imports=domains)
    x = (rng.integers(240, 256, (16, k)) * np.float32(4 / 255)).astype(np.float32)
    x[0, 0] = 0.0  # the dynamic form takes its range from the data: make it [0, 4]
    x_q = np.round(x / np.float32(4 / 255)).astype(np.int64)
    exact = (x_q @ q.astype(np.int64)).astype(np.float64) * (4 / 255) * 0.01
    return proto, {"x": x}, exact


@pytest.mark.parametrize("fmt", ["qdq", "dynamic"])
def test_exact_path_computes_int32_sums(fmt):
    """The exact path gives the int32 result whatever this host's kernels do: 8-bit
    weights and activations at 240..255, where vpmaddubsw would saturate every pair."""
    proto, feed, exact = _probe_model(8, fmt=fmt)
    got = exact_session(proto).run(None, feed)[0]
    # fp32 rounding of sums of ~128 products of magnitude ~4: 1e-5 relative.
    assert np.abs(got - exact).max() <= 1e-5 * np.abs(exact).max()


@pytest.mark.parametrize("fmt", ["contrib", "standard"])
def test_exact_path_agrees_with_onnxruntime_where_nothing_saturates(fmt):
    """On a quantize-dynamic model with 7-bit weights (no kernel saturates), the exact
    path and onnxruntime's int8 kernels agree within fp32 rounding."""
    proto = mlp(batch=4)
    model = import_model(proto)
    QuantizeDynamic(format=fmt, reduce_range=True).run(model, PassContext())
    quantized = export_model(model)
    x = {"input": np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)}
    ort_out = run(quantized, x)[0]
    exact_out = exact_session(quantized).run(None, x)[0]
    assert np.abs(ort_out - exact_out).max() <= 1e-4 * np.abs(ort_out).max()


def test_scoring_path_per_host_and_target(fake_host):
    fake_host(VNNI_FLAGS)
    pi, v3 = spec_of("target raspberry-pi-4\n").target, spec_of("target x86-64-v3\n").target
    eight, _, _ = _probe_model(8)
    seven, _, _ = _probe_model(7)
    assert scoring(seven, pi, True).path == "host"            # 7 bits: nothing saturates
    assert "7-bit weights" in scoring(seven, v3, False).note
    exact = scoring(eight, pi, True)                          # host saturates, Pi does not
    assert exact.path == "exact" and "exact int32" in exact.note
    same = scoring(eight, pi, False)
    assert same.path == "host" and same.representative
    reverse = scoring(eight, v3, False)                       # the target saturates, host not
    assert reverse.path == "host" and not reverse.representative
    assert "NOT the target's arithmetic" in reverse.note


# --------------------------------------------------------------------------- compile


def _spec_file(tmp_path, target: str, pipeline: str | None = None) -> str:
    path = tmp_path / "t.edge"
    extra = f'\n  pipeline "{pipeline}"' if pipeline else ""
    path.write_text(f"""target {target}
accuracy {{
  metric sqnr
  tolerance 30 dB
  data "{os.path.join(DATA, 'digits.npz')}"
}}
optimize {{
  precision int8
  fallback none
  backend ort{extra}
}}
""")
    return str(path)


def test_host_saturating_target_not_is_scored_on_the_exact_path(tmp_path, monkeypatch):
    """Pretend this host's onnxruntime saturates: a Raspberry Pi 4 artifact (8-bit
    weights, int32 accumulation) is scored on the exact path, and the manifest and
    report say so. The score is the exact path's, checked against the artifact's
    model run through `exact_session` by hand."""
    monkeypatch.setattr(machine, "onnxruntime_saturates", lambda: True)
    out = tmp_path / "out"
    artifact = edgec.compile(DIGITS, _spec_file(tmp_path, "raspberry-pi-4"), out,
                             cache_dir=str(tmp_path / "cache"))
    manifest = artifact.manifest
    assert manifest["int8"]["weight_bits"] == 8
    assert "int8-accumulation int32" in manifest["int8"]["weight_range"]
    assert manifest["int8"]["scored_with"] == "exact int32 arithmetic"
    assert "onnxruntime saturates" in manifest["accuracy"]["detail"]
    report = (out / "report.txt").read_text()
    assert "int8: 8-bit weights" in report and "exact int32 arithmetic" in report
    assert "exact int32" in (out / "report.html").read_text()
    # The recorded score is the exact path's on the odd-numbered samples.
    samples = dict(np.load(os.path.join(DATA, "digits.npz")))
    odd = {k: v[1::2] for k, v in samples.items()}
    reference = run(onnx.load(DIGITS), odd)
    session = exact_session(onnx.load(str(out / "model.onnx")))
    outs = [np.concatenate([session.run(None, {"input": odd["input"][i:i + 1]})[0]
                            for i in range(len(odd["input"]))])]
    assert abs(evaluate("sqnr", 0, reference, outs).value - manifest["accuracy"]["value"]) < 0.01


def test_target_saturating_host_not_keeps_7_bits_or_says_the_score_is_optimistic(tmp_path):
    out = tmp_path / "out"
    artifact = edgec.compile(DIGITS, _spec_file(tmp_path, "x86-64-v3"), out,
                             cache_dir=str(tmp_path / "cache"))
    int8 = artifact.manifest["int8"]
    assert int8["weight_bits"] == 7 and int8["representative"]
    assert "7-bit weights: no int8 kernel saturates" in int8["scoring"]
    if machine.onnxruntime_saturates():
        pytest.skip("this host saturates like x86-64-v3: no arithmetic differs")
    # 8-bit weights forced on a saturating target: scored here, flagged as optimistic.
    spec = _spec_file(tmp_path, "x86-64-v3",
                      "fixed-point(fold-constants,cse,dce),quantize-int8{reduce-range=false}")
    result = edgec.compiler.compile_model(DIGITS, spec, str(tmp_path / "forced"),
                                          edgec.compiler.CompileOptions(cache_dir=str(tmp_path / "cache")))
    int8 = result.manifest["int8"]
    assert int8["weight_bits"] == 8 and not int8["representative"]
    assert int8["weight_range"] == "reduce-range set in the spec's pipeline"
    assert "NOT the target's arithmetic" in result.manifest["accuracy"]["detail"]
    assert any("NOT the target's arithmetic" in d.message for d in result.diagnostics)
    assert "NOT the target's arithmetic" in (tmp_path / "forced" / "report.txt").read_text()
    json.dumps(result.manifest)


def test_per_layer_fallback_trials_use_the_targets_arithmetic(fake_host, monkeypatch):
    """quantize-int8{fallback=per-layer} scores its trials on the exact path when the
    host's onnxruntime saturates 8-bit weights and the target does not."""
    from edgec.quantization import sensitivity
    calls = []

    def counting(proto, samples):
        calls.append(1)
        return arithmetic.run_exact(proto, samples)
    monkeypatch.setattr(sensitivity, "run_exact", counting)
    fake_host(AVX2_FLAGS, measured=True)
    proto = onnx.load(DIGITS)
    for name, exact in (("raspberry-pi-4", True), ("x86-64-v3", False)):
        calls.clear()
        model = import_model(proto)
        context = PassContext(target=spec_of(f"target {name}\n").target,
                              calibration_data=digits_samples())
        result = QuantizeInt8(fallback="per-layer", metric="sqnr", tolerance="30dB").run(model, context)
        assert result.stats["fallback-held"] == 1
        assert bool(calls) == exact, name


def test_exact_path_reaches_into_if_branches():
    """quantize-dynamic rewrites MatMuls inside If branches (weights stay in the main
    graph): the weight scan finds them and the exact path rewrites the branch's
    MatMulInteger; against onnxruntime's int8 kernels on this model, 1e-4 relative."""
    rng = np.random.default_rng(0)
    branches = [helper.make_graph([helper.make_node("MatMul", ["x", w], [o])], w, [],
                                  [helper.make_tensor_value_info(o, TensorProto.FLOAT, [2, 4])])
                for w, o in (("w1", "a"), ("w2", "b"))]
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=branches[0], else_branch=branches[1])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8]),
         helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), w) for w in ("w1", "w2")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model = import_model(proto)
    assert QuantizeDynamic(format="standard", reduce_range=False).run(model, PassContext()).stats["nodes-quantized"] == 2
    quantized = export_model(model)
    assert largest_int8_weight(quantized) == 127
    branch_ops = [n.op_type for n in arithmetic.exact_model(quantized).graph.node[0].attribute[0].g.node]
    assert "MatMulInteger" not in branch_ops and "MatMul" in branch_ops
    for condition in (True, False):
        feed = {"x": rng.standard_normal((2, 8)).astype(np.float32), "c": np.array(condition)}
        ort_out = session(quantized).run(None, feed)[0]
        exact_out = exact_session(quantized).run(None, feed)[0]
        assert np.abs(ort_out - exact_out).max() <= 1e-4 * np.abs(ort_out).max()


def test_cache_key_depends_on_this_hosts_int8_arithmetic(monkeypatch):
    """A cache shared by a saturating and a non-saturating host must not hand one the
    other's artifact: their int8 candidates are scored on different paths."""
    from edgec.compiler import CompileOptions, _cache_key, _read_inputs

    repo = Path(__file__).resolve().parents[2]
    options = CompileOptions()
    inputs = _read_inputs(str(repo / "spec_examples" / "digits.onnx"),
                          str(repo / "spec_examples" / "rpi4.edge"), options)
    keys = {}
    for saturates in (True, False):
        monkeypatch.setattr(machine, "onnxruntime_saturates", lambda s=saturates: s)
        keys[saturates] = _cache_key(inputs, options)[0]
    assert keys[True] != keys[False]
