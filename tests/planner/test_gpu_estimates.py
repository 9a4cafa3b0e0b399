"""The GPU latency estimate against a real GPU: an H200's measured batch-1 latencies
(benchmarks/data/h200.json, torch with CUDA-graph replay) for ResNet-18, MobileNetV2
and the transformer encoder at fp32 and fp16 — each within 50 % (issue 11)."""

import importlib.util
from pathlib import Path

import pytest

from edgec.dsl import check_text
from edgec.planner.costmodel import GPU_LAUNCH_S, NODE_OVERHEAD_S, estimate, launch_seconds
from edgec.testing import models

REPO = Path(__file__).resolve().parents[2]


def _benchmark():
    spec = importlib.util.spec_from_file_location("gpu_estimates",
                                                  REPO / "benchmarks" / "gpu_estimates.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def table():
    return _benchmark().rows()


def test_h200_estimates_within_half_of_measured(table):
    assert len(table) == 6
    shown = "\n".join(f"{r['model']} {r['precision']}: measured {r['measured_ms']:.3f} ms, "
                      f"estimate {r['estimate_ms']:.3f} ms ({r['error']:+.0%})" for r in table)
    assert all(abs(r["error"]) <= 0.5 for r in table), shown
    # The per-kernel cost is stated, and elementwise followers do not launch kernels.
    assert {r["launch_us"] for r in table} == {GPU_LAUNCH_S * 1e6}
    kernels = {(r["model"], r["precision"]): r["kernels"] for r in table}
    assert kernels[("resnet18", "fp32")] == 23   # 20 Conv, MaxPool, GlobalAveragePool, Gemm


def _target(text):
    spec, diagnostics = check_text(text, "<t>")
    assert spec is not None, [d.render() for d in diagnostics]
    return spec.target


def test_launch_field_sets_the_per_kernel_cost():
    orin = _target("target jetson-orin-nano\n")
    assert launch_seconds(orin) == GPU_LAUNCH_S
    assert launch_seconds(_target("target raspberry-pi-4\n")) == NODE_OVERHEAD_S
    slow = _target("target jetson-orin-nano { launch 50 us }\n")
    assert launch_seconds(slow) == pytest.approx(50e-6)
    from edgec.frontend import import_model
    model = import_model(models.conv_bn_relu())
    fast, slower = estimate(model, orin), estimate(model, slow)
    assert slower.kernels == fast.kernels >= 1
    assert slower.seconds - fast.seconds == pytest.approx(45e-6 * fast.kernels)
    assert estimate(model, orin).to_json()["launch_us"] == pytest.approx(5.0)


def test_fp16_is_estimated_faster_on_a_jetson():
    """On a small GPU the precision's peak binds, not the per-SM bound: fp16 pays."""
    from edgec.frontend import import_model
    from edgec.passmgr import run_pipeline

    orin = _target("target jetson-agx-orin\n")
    fp32 = import_model(models.resnet18())
    run_pipeline(fp32)
    fp16 = import_model(models.resnet18())
    run_pipeline(fp16)
    run_pipeline(fp16, "convert-fp16,dce")
    assert estimate(fp16, orin).seconds < 0.7 * estimate(fp32, orin).seconds
