"""onnx's backend node test cases and light models, run through edgec and onnxruntime.

CI runs a deterministic sample of 200 node cases (no passes; default pipeline; default
pipeline with the inputs written in as initializers) and the 9 light models;
``EDGEC_FULL_CONFORMANCE=1 python -m pytest tests/conformance`` runs every node case.
For the table of counts per class use ``python -m edgec.testing.conformance [--no-passes]``.
"""

from __future__ import annotations

import os

import pytest

from edgec.testing import conformance
from edgec.testing.conformance import Outcome

FULL = os.environ.get("EDGEC_FULL_CONFORMANCE") == "1"

TRANSFORMATIONS = {
    "no-passes": conformance.no_passes,
    "default-pipeline": conformance.default_pipeline,
}


def _selected_names() -> list[str]:
    # Collecting the cases costs about 10 s; lru_cache makes it once per session, and
    # collection itself needs the names to parametrize.
    cases = conformance.node_cases()
    chosen = cases if FULL else conformance.sample(cases)
    return [c.name for c in chosen]


def _case(name: str, source: str = "node") -> conformance.Case:
    cases = conformance.node_cases() if source == "node" else conformance.light_cases()
    return next(c for c in cases if c.name == name)


def _check(case: conformance.Case, transformation_name: str) -> None:
    result = conformance.run_case(case, TRANSFORMATIONS[transformation_name]())
    if result.outcome is Outcome.ORT_FAILS_ORIGINAL:
        pytest.skip(f"onnxruntime fails on the original model ({result.reason})")
    if result.outcome is Outcome.TRAINING_ONLY:
        pytest.skip(f"training-only case ({result.reason})")
    assert result.outcome is Outcome.PASS, f"{result.outcome.value}: {result.reason}"


@pytest.mark.parametrize("transformation", list(TRANSFORMATIONS))
@pytest.mark.parametrize("name", _selected_names())
def test_node_case(name: str, transformation: str) -> None:
    _check(_case(name), transformation)


@pytest.mark.parametrize("name", _selected_names())
def test_node_case_with_constant_inputs(name: str) -> None:
    """The inputs as initializers: the default pipeline's fold-constants evaluates the operator."""
    case = conformance.with_constant_inputs(_case(name))
    if case is None:
        pytest.skip("an input is not a plain tensor")
    _check(case, "default-pipeline")


@pytest.mark.parametrize("transformation", list(TRANSFORMATIONS))
@pytest.mark.parametrize("name", [c.name for c in conformance.light_cases()])
def test_light_model(name: str, transformation: str) -> None:
    _check(_case(name, "light"), transformation)


def test_sample_is_deterministic_and_ci_sized() -> None:
    cases = conformance.node_cases()
    first = [c.name for c in conformance.sample(cases)]
    assert first == [c.name for c in conformance.sample(list(reversed(cases)))]
    assert len(first) == conformance.CI_SAMPLE_SIZE
    assert first == sorted(first)
    # Training-only cases are recognised by onnx's training domain.
    training = [c.name for c in cases if c.training_only]
    assert "test_adam" in training and "test_training_dropout" not in training


def test_harness_reports_a_wrong_result_and_an_edgec_error() -> None:
    """The harness itself: a transformation that breaks numerics or raises is caught."""
    case = _case("test_relu")

    def corrupt(proto, base_dir):
        out = conformance.no_passes().apply(proto, base_dir)
        node = out.graph.node[0]
        node.op_type = "Neg"  # relu(x) -> -x: a wrong result, same shape and dtype
        return out

    def crash(proto, base_dir):
        raise RuntimeError("boom\nsecond line")

    wrong = conformance.run_case(case, conformance.Transformation("corrupt", corrupt))
    assert wrong.outcome is Outcome.WRONG_RESULT and "values differ" in wrong.reason
    error = conformance.run_case(case, conformance.Transformation("crash", crash))
    assert error.outcome is Outcome.EDGEC_ERROR and error.reason == "RuntimeError: boom"

    def unrunnable(proto, base_dir):
        out = conformance.no_passes().apply(proto, base_dir)
        out.graph.node[0].op_type = "NoSuchOp"
        return out

    rejected = conformance.run_case(case, conformance.Transformation("unrunnable", unrunnable))
    assert rejected.outcome is Outcome.ORT_FAILS_ON_EDGEC_OUTPUT and rejected.outcome.is_edgec_defect


def test_compare_outputs_follows_onnx_runner() -> None:
    import numpy as np

    compare = conformance.compare_outputs
    nan = np.array([1.0, np.nan], dtype=np.float32)
    assert compare([nan], [nan.copy()], 1e-3, 1e-7) is None  # NaN equals NaN
    assert "dtype" in compare([np.zeros(2, np.float32)], [np.zeros(2, np.float64)], 1e-3, 1e-7)
    assert "shape" in compare([np.zeros(2, np.float32)], [np.zeros(3, np.float32)], 1e-3, 1e-7)
    assert compare([[np.ones(2)]], [[np.ones(2)]], 1e-3, 1e-7) is None  # sequences
    assert "sequence" in compare([[np.ones(2)]], [[np.ones(2), np.ones(2)]], 1e-3, 1e-7)
    assert compare([None], [None], 1e-3, 1e-7) is None  # empty optionals
    assert "optional" in compare([None], [np.ones(1)], 1e-3, 1e-7)
    strings = np.array(["a", "b"], dtype=object)
    assert compare([strings], [strings.copy()], 1e-3, 1e-7) is None
    assert "strings" in compare([strings], [np.array(["a", "c"], dtype=object)], 1e-3, 1e-7)
    assert "2 outputs" in compare([np.ones(1)], [np.ones(1), np.ones(1)], 1e-3, 1e-7)


def test_command_prints_counts_and_json(capsys) -> None:
    import json

    assert conformance.main(["--no-passes", "--cases", "node", "-k", "test_relu"]) == 0
    text = capsys.readouterr().out
    assert "edgec conformance: no passes" in text and "ORT fails on original" in text
    assert conformance.main(["--no-passes", "--cases", "node", "-k", "test_adam", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"]["training-only"] == report["counts"]["cases"] >= 2
