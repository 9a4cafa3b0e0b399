"""Budgets judged without a compile: a spec from text, an Evaluation filled in by hand, and
(for memory) a small IR model built in the test."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.diagnostics import Severity
from edgec.dsl import check_text
from edgec.frontend.onnx_import import import_model
from edgec.planner.budgets import budget_diagnostics, in_unit, judge, memory_estimate
from edgec.planner.search import Configuration, Evaluation


def _spec(budget: str):
    spec, diagnostics = check_text(
        f"target host\nbudget {{\n{budget}\n}}\n"
        "accuracy {\n  metric top1-agreement\n  tolerance 1 %\n}\n", "t.edge")
    assert spec is not None, diagnostics
    return spec


def _evaluation(**figures) -> Evaluation:
    figures.setdefault("accuracy_held", True)
    figures.setdefault("accuracy_detail", "top1-agreement 100% (tolerance 1%)")
    return Evaluation(Configuration("fp32 on ort", "fp32", "", "", "ort"), **figures)


def _by_name(budgets: list[dict]) -> dict[str, dict]:
    return {b["name"]: b for b in budgets}


def _model(y_shape=(2, 8)):
    """x[2,4] @ w[4,8] -> y -> Relu -> z; Sigmoid(x) -> s. The weight is 128 bytes; the
    activations y, z (64 bytes each) and s (32 bytes)."""
    w = numpy_helper.from_array(np.ones((4, 8), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"]),
         helper.make_node("Sigmoid", ["x"], ["s"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 8]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, [2, 4])], [w],
        value_info=[helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)])
    return import_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_latency_held_and_missed_with_the_factor_and_where_it_was_measured():
    spec = _spec("  latency < 5 ms p90 at batch 1")
    held = _by_name(judge(spec, _evaluation(latency_s=0.004, latency_where="host"), None))
    assert held["latency"]["status"] == "held"
    assert held["latency"]["detail"] == "p90 within 5 ms (host)"
    assert held["latency"]["percentile"] == 90
    missed = _by_name(judge(spec, _evaluation(latency_s=0.0075, latency_where="host"), None))
    assert missed["latency"]["status"] == "missed"
    assert missed["latency"]["detail"] == "p90 7.5 ms against 5 ms (1.50x, host)"


def test_an_estimated_latency_says_so_and_an_unknown_one_is_not_judged():
    spec = _spec("  latency < 5 ms p50 at batch 1")
    budgets = _by_name(judge(spec, _evaluation(latency_s=0.02, latency_where="estimated"), None))
    assert budgets["latency"]["detail"] == "estimated p50 20 ms against 5 ms (4.00x, estimated)"
    assert budgets["latency"]["where"] == "estimated"
    assert "latency" not in _by_name(judge(spec, _evaluation(), None))


def test_size_is_judged_in_the_unit_the_spec_wrote():
    spec = _spec("  size < 10 KiB")
    over = _by_name(judge(spec, _evaluation(size_bytes=12595), None))["size"]
    assert over["status"] == "missed"
    assert over["detail"] == "12.3 KiB against 10 KiB"
    assert over["value_bytes"] == 12595
    exact = _by_name(judge(spec, _evaluation(size_bytes=10 * 1024), None))["size"]
    assert exact["status"] == "held"  # the limit itself is within the budget


def test_in_unit_groups_thousands_and_defaults_to_bytes():
    assert in_unit(3 << 20, _spec("  size < 2 MiB").budget.size) == "3 MiB"
    assert in_unit(1_500_000, _spec("  size < 2 KB").budget.size) == "1,500 KB"


def test_memory_is_the_weights_and_the_two_largest_activations():
    model = _model()
    assert memory_estimate(model) == 128 + 64 + 64  # s (32 bytes) is not one of the two
    spec = _spec("  memory < 256 B")
    budget = _by_name(judge(spec, _evaluation(), model))["memory"]
    assert budget["status"] == "held" and budget["estimated"] is True
    assert budget["value_bytes"] == 256
    tight = _by_name(judge(_spec("  memory < 255 B"), _evaluation(), model))["memory"]
    assert tight["status"] == "missed"
    assert tight["detail"].startswith("estimated peak 256 B (weights + the two largest")


def test_an_activation_of_unknown_shape_is_left_out_of_the_estimate():
    assert memory_estimate(_model(y_shape=None)) == 128 + 64 + 32


def test_accuracy_is_always_judged_and_last():
    budgets = judge(_spec("  latency < 5 ms p50 at batch 1"),
                    _evaluation(latency_s=0.001, latency_where="host", accuracy_held=False,
                                accuracy_detail="top1-agreement 97% (tolerance 1%)"), None)
    assert [b["name"] for b in budgets] == ["latency", "accuracy"]
    assert budgets[-1] == {"name": "accuracy", "status": "missed", "metric": "top1-agreement",
                           "detail": "top1-agreement 97% (tolerance 1%)"}


def test_an_evaluation_holds_only_when_every_budget_holds():
    spec = _spec("  latency < 5 ms p50 at batch 1\n  size < 1 KiB")
    ev = _evaluation(latency_s=0.001, latency_where="host", size_bytes=2048)
    ev.budgets = judge(spec, ev, None)
    assert not ev.held
    assert ev.rejection() == "size missed: 2 KiB against 1 KiB"
    ev.size_bytes = 512
    ev.budgets = judge(spec, ev, None)
    assert ev.held


@pytest.mark.parametrize("status, head", [
    ("missed", "the spec's budget cannot be met"),
    ("unverified", "the spec's budget cannot be verified for this target")])
def test_budget_diagnostics_name_the_budget_and_every_candidate(status, head):
    manifest = {
        "budgets": [{"name": "latency", "status": status}, {"name": "accuracy", "status": "held"}],
        "summary": ["best candidate: fp32 on ort"],
        "candidates": [{"label": "fp32 on ort", "status": "chosen", "reason": "latency missed"},
                       {"label": "fp32 on tvm", "status": "skipped", "reason": "not built"}]}
    [diagnostic] = budget_diagnostics(manifest, "out")
    assert diagnostic.severity == Severity.ERROR and diagnostic.code == "budget"
    assert diagnostic.message == head
    assert diagnostic.location.path == "out"
    assert list(diagnostic.notes) == [
        "best candidate: fp32 on ort",
        "1 configuration tried (nothing was written; --json lists each with its budgets):",
        "  fp32 on ort: latency missed", "  fp32 on tvm: not built",
        "--allow-over-budget writes the best one anyway, marked as such, with its report.txt"]
