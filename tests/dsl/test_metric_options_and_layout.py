"""The accuracy block's metric options (`metric sequence-agreement blank 3`) and data
layout (`layout per-sample`): resolved, defaulted, printed back, refused when wrong."""

from __future__ import annotations

from edgec.dsl import Quantity, check_text
from edgec.metrics import parse_metric
from edgec.planner.search import configurations


def _spec(accuracy: str):
    spec, diagnostics = check_text(f"target host\naccuracy {{\n{accuracy}\n}}\n")
    assert spec is not None, "\n".join(d.render() for d in diagnostics)
    return spec


def _errors(accuracy: str) -> list[str]:
    spec, diagnostics = check_text(f"target host\naccuracy {{\n{accuracy}\n}}\n")
    return [d.message for d in diagnostics if d.is_error]


def test_metric_options_resolve_into_the_metric_text():
    acc = _spec("  metric sequence-agreement blank 3").accuracy
    assert acc.metric == "sequence-agreement blank 3" and acc.metric_name == "sequence-agreement"
    assert acc.tolerance == Quantity(1.0, "%")  # the drop metrics' default
    assert parse_metric(acc.metric) == ("sequence-agreement", {"blank": 3})
    # A threshold in % is the same fraction.
    assert _spec("  metric iou threshold 30 %").accuracy.metric == "iou threshold 0.3"
    assert _spec("  metric dice").accuracy.metric == "dice"  # defaults are not written out


def test_layout_defaults_to_auto_and_round_trips():
    assert _spec("  metric sqnr").accuracy.layout == "auto"
    spec = _spec("  metric iou threshold 0.25\n  layout per-sample")
    assert spec.accuracy.layout == "per-sample"
    again, diagnostics = check_text(spec.to_text(), "<resolved>")
    assert diagnostics == [] and again == spec


def test_bad_options_and_tolerances_are_one_located_error_each():
    assert _errors("  metric top1-agreement blank 0") == [
        "metric 'top1-agreement' has no option 'blank'"]
    assert _errors("  metric sequence-agreement blank 1 blank 2") == [
        "option 'blank' is given twice"]
    # A word after an option's number is the next option's name, so a unit is read so.
    assert _errors("  metric iou threshold 2 ms") == [
        "unexpected end of line: this statement is not finished"]
    assert _errors("  metric sequence-agreement\n  tolerance 30 dB")[0].startswith(
        "a sequence-agreement tolerance is a drop in %")
    assert _errors("  layout rows") == ["unknown data layout 'rows'"]


def test_the_per_layer_fallback_pass_gets_the_metric_with_its_options():
    spec = _spec("  metric sequence-agreement blank 2\n  tolerance 2 %")
    spec = type(spec)(**{**spec.__dict__, "optimize": type(spec.optimize)(
        **{**spec.optimize.__dict__, "precisions": ("int8",)})})
    configs, _ = configurations(spec, spec.target, "ort", {"quantize-int8"})
    fallback = [c for c in configs if "fallback=per-layer" in c.passes]
    assert fallback and 'metric="sequence-agreement blank 2"' in fallback[0].passes
    from edgec.passmgr.pipeline import parse_pipeline
    quantize = [p for p in parse_pipeline(fallback[0].passes) if p.name == "quantize-int8"]
    assert [p.option("metric") for p in quantize] == ["sequence-agreement blank 2"]
