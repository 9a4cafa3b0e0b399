"""onnx's node test cases through each lossy pass: quantize-int8, quantize-dynamic,
quantize-weights (int8 tolerance) and convert-fp16 (fp16 tolerance).

"Still passing" for a lossy pass, as ``edgec.testing.conformance`` implements it
(``pipeline(text, calibration=True, lossy=...)``), for every case onnxruntime passes
as onnx wrote it:

* the pass gets the case's own inputs as ``PassContext(calibration_data=...)``: one
  sample (each input with a leading sample axis of 1, fed as it is);
* no edgec error (nothing raised by import, the pass, the verifier or export), and
  onnxruntime loads and runs the exported model ("ORT fails on edgec output" is a
  defect), with the case's output names;
* a case the pass leaves unmodified -- its export is byte for byte the one of
  import -> export alone -- passes at the case's own rtol/atol, as without the pass;
* a case the pass modifies passes at the case's own tolerance, or else "within lossy
  tolerance": same number of outputs, same dtypes and shapes, non-float outputs
  exact, NaN and +-inf exactly where the expected outputs have them, and for each
  float output SQNR = 10·log10(Σ ref² / Σ (out - ref)²) over the finite values
  >= 20 dB for int8 (noise power <= 1 % of the signal's) and >= 40 dB for fp16.

Both variants run: the cases as onnx wrote them (weights are graph inputs, so the
passes that need constant weights mostly leave them alone, and quantize-int8 quantizes
MatMul/Gemm activations), and ``with_constant_inputs`` (every input an initializer:
the weights are constants, and the pass really quantizes the operator).

CI runs a deterministic sample per pass: 50 cases whose graph has an op the pass
rewrites and 50 others (both by CRC-32 of the name, see ``conformance.sample``).
``EDGEC_FULL_CONFORMANCE=1`` runs every node case. The table of counts per class:
``python -m edgec.testing.conformance --pipeline quantize-int8 --lossy int8 [--constant-inputs]``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from edgec.testing import conformance
from edgec.testing.conformance import LOSSY_TOLERANCES, Outcome

FULL = os.environ.get("EDGEC_FULL_CONFORMANCE") == "1"
SAMPLE_RELEVANT = SAMPLE_OTHER = 50

# Cases where the loss is int8's, not a defect: (pass, case) -> why.
KNOWN_LOSS = {
    ("quantize-int8", "test_attention_4d_softcap_neginf_mask_poison_expanded"):
        "V holds 1000.0 'poison' in the masked positions (the case checks they never leak): "
        "a per-tensor u8 range over [0, 1000] has a step of 3.9, which rounds the real "
        "values (< 1) of V to 0",
    **{("convert-fp16", f"test_{op}_large_number{suffix}"):
       "constant inputs 10000..10003: fp16's step there is 8, so the initializer itself "
       "rounds to 10000/10004 before (Log)Softmax; no overflow, which is all the pass checks"
       for op in ("softmax", "logsoftmax") for suffix in ("", "_expanded", "_expanded_ver18")},
}

# pass -> (tolerance, op types it rewrites)
PASSES = {
    "quantize-int8": ("int8", {"Conv", "MatMul", "Gemm"}),
    "quantize-dynamic": ("int8", {"MatMul", "Gemm"}),
    "quantize-weights": ("int8", {"Conv", "MatMul", "Gemm"}),
    "convert-fp16": ("fp16", None),  # None: passes.convert_fp16.FP16_OPS
}


def _ops(case: conformance.Case) -> set[str]:
    return {n.op_type for n in case.model.graph.node}


def _rewritten_ops(pass_name: str) -> set[str]:
    ops = PASSES[pass_name][1]
    if ops is None:
        from passes.convert_fp16 import FP16_OPS
        ops = set(FP16_OPS)
    return ops


def _selected(pass_name: str) -> list[str]:
    cases = conformance.node_cases()
    if FULL:
        return [c.name for c in cases]
    ops = _rewritten_ops(pass_name)
    relevant = [c for c in cases if _ops(c) & ops]
    others = [c for c in cases if not _ops(c) & ops]
    chosen = conformance.sample(relevant, SAMPLE_RELEVANT) + conformance.sample(others, SAMPLE_OTHER)
    return sorted(c.name for c in chosen)


def _params() -> list:
    return [pytest.param(p, v, n, id=f"{p}-{v}-{n}")
            for p in PASSES for v in ("as-written", "constant-inputs") for n in _selected(p)]


def _case(name: str) -> conformance.Case:
    return next(c for c in conformance.node_cases() if c.name == name)


def _transformation(pass_name: str) -> conformance.Transformation:
    return conformance.pipeline(pass_name, calibration=True, lossy=PASSES[pass_name][0])


@pytest.mark.parametrize("pass_name,variant,name", _params())
def test_case_still_passes(pass_name: str, variant: str, name: str) -> None:
    case = _case(name)
    if variant == "constant-inputs":
        case = conformance.with_constant_inputs(case)
        if case is None:
            pytest.skip("an input is not a plain tensor, or several data sets")
    result = conformance.run_case(case, _transformation(pass_name))
    known = KNOWN_LOSS.get((pass_name, name))
    if known is not None and result.outcome is Outcome.WRONG_RESULT:
        pytest.xfail(known)
    if result.outcome in (Outcome.ORT_FAILS_ORIGINAL, Outcome.TRAINING_ONLY):
        pytest.skip(f"{result.outcome.value}: {result.reason}")
    assert result.outcome in (Outcome.PASS, Outcome.LOSSY_PASS), f"{result.outcome.value}: {result.reason}"
    if result.outcome is Outcome.LOSSY_PASS:
        assert result.modified  # the lossy tolerance is for cases the pass changed only


# --------------------------------------------------------------------------- the harness


def test_sample_is_deterministic_and_covers_what_the_passes_rewrite() -> None:
    for pass_name in PASSES:
        names = _selected(pass_name)
        assert names == _selected(pass_name)
        if not FULL:
            assert len(names) == SAMPLE_RELEVANT + SAMPLE_OTHER
            ops = _rewritten_ops(pass_name)
            assert sum(bool(_ops(_case(n)) & ops) for n in names) == SAMPLE_RELEVANT


def test_a_pass_modifies_matmul_and_the_lossy_tolerance_applies() -> None:
    case = conformance.with_constant_inputs(_case("test_matmul_2d"))
    result = conformance.run_case(case, _transformation("quantize-weights"))
    # quantize-weights leaves weights under 256 elements alone: unmodified, exact.
    assert result.outcome is Outcome.PASS and result.modified is False
    result = conformance.run_case(case, _transformation("quantize-int8"))
    assert result.modified is True
    assert result.outcome in (Outcome.PASS, Outcome.LOSSY_PASS), result.reason


def test_unmodified_case_gets_no_lossy_tolerance() -> None:
    """A transformation that changes numerics but says nothing: with the same bytes as a
    plain round trip it could not; with different ones, it is judged by SQNR."""
    case = _case("test_relu")
    noisy = conformance.Transformation(
        "noisy", lambda proto, base_dir, data=None: _scaled(conformance.no_passes().apply(proto, base_dir), 1.5),
        calibration=True, lossy=LOSSY_TOLERANCES["int8"])
    result = conformance.run_case(case, noisy)
    assert result.outcome is Outcome.WRONG_RESULT and result.modified and "SQNR" in result.reason
    slight = conformance.Transformation(
        "slight", lambda proto, base_dir, data=None: _scaled(conformance.no_passes().apply(proto, base_dir), 1.01),
        calibration=True, lossy=LOSSY_TOLERANCES["int8"])
    assert conformance.run_case(case, slight).outcome is Outcome.LOSSY_PASS
    exact = conformance.Transformation("exact", lambda proto, base_dir, data=None:
                                       conformance.no_passes().apply(proto, base_dir),
                                       calibration=True, lossy=LOSSY_TOLERANCES["int8"])
    result = conformance.run_case(case, exact)
    assert result.outcome is Outcome.PASS and result.modified is False


def _scaled(proto, factor: float):
    """The graph's single output multiplied by ``factor``."""
    import onnx
    from onnx import helper, numpy_helper

    out = proto.graph.output[0].name
    for node in proto.graph.node:
        node.output[:] = [o + "_raw" if o == out else o for o in node.output]
    proto.graph.initializer.append(numpy_helper.from_array(np.array(factor, np.float32), "factor"))
    proto.graph.node.append(helper.make_node("Mul", [out + "_raw", "factor"], [out]))
    onnx.checker.check_model(proto)
    return proto


def test_lossy_tolerance_compare() -> None:
    int8 = LOSSY_TOLERANCES["int8"]
    ref = np.linspace(-1, 1, 100).astype(np.float32)
    assert int8.compare([ref], [ref + 0.05], 1e-3, 1e-7) is None  # ~26 dB
    assert "SQNR" in int8.compare([ref], [ref + 0.2], 1e-3, 1e-7)  # ~14 dB
    assert "dtype" in int8.compare([ref], [ref.astype(np.float64)], 1e-3, 1e-7)
    assert "shape" in int8.compare([ref], [ref[:-1]], 1e-3, 1e-7)
    assert int8.compare([np.arange(3)], [np.arange(3) + 1], 1e-3, 1e-7) is not None  # ints exact
    with_nan = ref.copy()
    with_nan[3] = np.nan
    assert int8.compare([with_nan], [with_nan], 1e-3, 1e-7) is None
    assert "NaN" in int8.compare([with_nan], [ref], 1e-3, 1e-7)
    assert "1 outputs" in int8.compare([ref, ref], [ref], 1e-3, 1e-7)


def test_calibration_samples_are_the_case_inputs_as_one_sample() -> None:
    case = _case("test_matmul_2d")
    samples = conformance.calibration_samples(case)
    inputs = case.data_sets[0][0]
    assert list(samples) == [vi.name for vi in case.model.graph.input]
    for x, s in zip(inputs, samples.values()):
        assert s.shape == (1, *x.shape) and np.array_equal(s[0], x)
