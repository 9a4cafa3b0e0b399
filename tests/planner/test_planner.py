"""The planner: which configurations it tries and in what order, the one it ships, and the
account it gives when none holds. Latency on a Raspberry Pi 5 is estimated (the board
is not at hand), which makes these tests deterministic; accuracy is measured."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgec.dsl import check_text
from edgec.planner.search import Evaluation, choose, configurations

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "spec_examples" / "digits.onnx"
DATA = REPO / "spec_examples" / "data" / "digits.npz"
ALL_PASSES = {"quantize-int8", "convert-fp16", "prune-channels", "prune-unstructured"}


def spec_of(text: str):
    spec, diagnostics = check_text(text, str(REPO / "spec_examples" / "t.edge"))
    assert spec is not None, [d.render() for d in diagnostics]
    return spec


def test_configurations_cheapest_first_with_reasons_for_skips():
    spec = spec_of("target raspberry-pi-4\noptimize {\n  precision fp32, fp16, int8\n"
                   "  prune up to 30 % structured\n  backend auto\n}\n")
    configs, skipped = configurations(spec, spec.target, "auto", ALL_PASSES)
    labels = [c.label for c in configs]
    assert labels[:6] == ["fp32 on ort", "fp32 on tvm", "int8 (Conv, MatMul, Gemm) on ort",
                          "int8 (all ops) on ort", "int8 (contiguous regions) on ort",
                          "int8 with per-layer fp32 fallback on ort"]
    assert labels[6] == "fp32, 15% pruned on ort"
    assert labels[-1] == "int8 with per-layer fp32 fallback, 30% pruned on ort"
    assert [c.sparsity for c in configs].count(0.3) == 6
    assert any("does not run fp16 fast" in s.reason for s in skipped)
    assert "prune-channels{sparsity=0.15},quantize-int8{ops=all reduce-range=false},dce" in [c.passes for c in configs]


def test_int8_on_tvm_is_skipped_with_the_reason():
    spec = spec_of("target raspberry-pi-5\noptimize {\n  precision fp32, int8\n  backend tvm\n}\n")
    configs, skipped = configurations(spec, spec.target, "tvm", ALL_PASSES)
    assert [c.label for c in configs] == ["fp32 on tvm"]
    assert "no int8 kernels" in skipped[0].reason


def test_a_missing_pass_is_a_reason_not_a_crash():
    spec = spec_of("target host\noptimize {\n  precision fp32, int8\n  backend ort\n}\n")
    configs, skipped = configurations(spec, spec.target, "ort", set())
    assert [c.precision for c in configs] == ["fp32"]
    assert skipped[0].reason == "the pass 'quantize-int8' is not installed"


def _ev(label, latency, held, precision="fp32", backend="ort"):
    from edgec.planner.search import Configuration
    e = Evaluation(Configuration(label, precision, "", "", backend), latency_s=latency,
                   latency_where="host", accuracy_held=True)
    e.budgets = [{"name": "latency", "status": "held" if held else "missed", "detail": "x"}]
    return e


def test_choose_first_or_fastest():
    evs = [_ev("a", 3.0, False), _ev("b", 2.0, True, "fp16"), _ev("c", 1.0, True, "int8")]
    assert choose(evs, "first")[0].config.label == "b"
    assert choose(evs, "fastest")[0].config.label == "c"
    # Within the first holding group (same precision, other backend) the faster wins.
    evs = [_ev("ort", 2.0, True), _ev("tvm", 1.5, True, backend="tvm"), _ev("int8", 1.0, True, "int8")]
    assert choose(evs, "first")[0].config.label == "tvm"
    winner, best = choose([_ev("a", 3.0, False), _ev("b", 2.0, False)], "first")
    assert winner is None and best.config.label == "b"


def _rpi5_spec(tmp_path, metric_block: str) -> Path:
    spec = tmp_path / "rpi5.edge"
    spec.write_text(f"""target raspberry-pi-5
budget {{
  latency < 1.25 ms p50 at batch 128
}}
accuracy {{
{metric_block}
  data "{DATA}"
}}
optimize {{
  precision fp32, int8
  backend ort
}}
""")
    return spec


def _compile(tmp_path, spec, *extra):
    return subprocess.run([sys.executable, "-m", "edgec", "compile", str(DIGITS), "--spec",
                           str(spec), "-o", "out", "--cache-dir", str(tmp_path / "cache"), *extra],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)


def test_int8_is_chosen_when_fp32_misses_the_latency_budget(tmp_path):
    spec = _rpi5_spec(tmp_path, "  metric top1-agreement\n  tolerance 1 %")
    result = _compile(tmp_path, spec)
    assert result.returncode == 0, result.stderr
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["configuration"]["precision"] == "int8"
    first = m["candidates"][0]
    assert first["label"] == "fp32 on ort" and first["status"] == "rejected"
    assert "latency missed: estimated p50" in first["reason"]
    assert m["latency"]["where"] == "estimated"
    assert m["accuracy"]["held"] is True
    assert "estimated" in (tmp_path / "out" / "report.txt").read_text()


def test_no_configuration_holds_exit_4_with_an_actionable_summary(tmp_path):
    # int8 keeps top-1 agreement on every digits sample, so the stricter tolerance is
    # stated as an SQNR floor the int8 model (about 43 dB with the 8-bit weights the
    # Pi 5's int32 accumulation allows) cannot reach.
    spec = _rpi5_spec(tmp_path, "  metric sqnr\n  tolerance 45 dB")
    result = _compile(tmp_path, spec)
    assert result.returncode == 4, result.stderr
    assert not (tmp_path / "out").exists()
    err = result.stderr
    assert "best candidate: " in err
    assert "misses latency" in err or "misses accuracy" in err
    assert "meets 1.25 ms" in err and "relax the tolerance" in err
    assert "configurations tried" in err


def test_search_fastest_tries_everything(tmp_path):
    spec = _rpi5_spec(tmp_path, "  metric top1-agreement\n  tolerance 1 %")
    spec.write_text(spec.read_text().replace("backend ort", "backend ort\n  search fastest"))
    result = _compile(tmp_path, spec)
    assert result.returncode == 0, result.stderr
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    tried = [c for c in m["candidates"] if c.get("precision")]
    statuses = [c["status"] for c in tried]
    assert len(tried) == 5 and statuses.count("chosen") == 1
    # A candidate is skipped only when its passes gave a model already built.
    assert all("gave the same model as" in c["reason"] for c in tried if c["status"] == "skipped")


def test_lstm_and_attention_dynamic_int8_candidates_follow_each_static_policy():
    """LSTM and fused Attention run in int8 only in onnxruntime's dynamic forms: the
    planner offers them alone and after each static policy, as int8 configurations (so
    `reject_slower_than_fp32` judges them like any other)."""
    spec = spec_of("target host\noptimize {\n  precision fp32, int8\n  backend ort\n}\n")
    configs, skipped = configurations(spec, spec.target, "ort", {"quantize-int8", "quantize-dynamic"})
    by_label = {c.label: c for c in configs}
    dynamic = [c for c in configs if "quantize-dynamic" in c.passes]
    assert [c.label for c in dynamic] == [
        "int8 (LSTM, attention; dynamic) on ort",
        "int8 (Conv, MatMul, Gemm) + dynamic LSTM, attention on ort",
        "int8 (all ops) + dynamic LSTM, attention on ort",
        "int8 (contiguous regions) + dynamic LSTM, attention on ort"]
    assert all(c.precision == "int8" for c in dynamic) and not skipped
    reduce = "reduce-range=" + ("true" if spec.target.int8_saturates else "false")
    assert dynamic[0].passes == f"quantize-dynamic{{ops=LSTM,Attention {reduce}}},dce"
    static = by_label["int8 (all ops) on ort"].passes.removesuffix(",dce")
    assert dynamic[2].passes == f"{static},quantize-dynamic{{ops=LSTM,Attention {reduce}}},dce"
    assert len({c.group for c in configs}) == len(configs)  # each its own group
    # Without the pass: said, not a crash.
    configs, skipped = configurations(spec, spec.target, "ort", {"quantize-int8"})
    assert not any("quantize-dynamic" in c.passes for c in configs)
    assert [s.reason for s in skipped] == ["the pass 'quantize-dynamic' is not installed"]


def test_dynamic_lstm_attention_candidates_only_where_the_model_may_have_them():
    spec = spec_of("target host\noptimize {\n  precision fp32, int8\n  backend ort\n}\n")
    passes = {"quantize-int8", "quantize-dynamic"}

    def dynamic(ops):
        configs, _ = configurations(spec, spec.target, "ort", passes, model_ops=frozenset(ops))
        return sum("quantize-dynamic" in c.passes for c in configs)

    assert dynamic({"Conv", "Relu", "Softmax"}) == 0         # a CNN classifier
    assert dynamic({"Conv", "LSTM"}) == dynamic({"MatMul", "Softmax", "Softmax->MatMul"}) == 4
    assert dynamic({"MatMul", "Softmax", "Add"}) == 0        # a MatMul head, an output Softmax
    assert dynamic({"Attention", "SkipLayerNormalization"}) == 4  # already fused
