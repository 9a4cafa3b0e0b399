"""report.html renders in headless Chromium with its chart drawn: the candidates' dots and
the budget lines are on the screenshot."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgec.testing.required import missing

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "spec_examples" / "digits.onnx"
DATA = REPO / "spec_examples" / "data" / "digits.npz"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    spec = tmp / "rpi5.edge"
    spec.write_text(f'target raspberry-pi-5\nbudget {{\n  latency < 1.25 ms p50 at batch 128\n}}\n'
                    f'accuracy {{\n  metric top1-agreement\n  tolerance 1 %\n  data "{DATA}"\n}}\n'
                    'optimize {\n  precision fp32, int8\n  backend ort\n  search fastest\n}\n')
    result = subprocess.run([sys.executable, "-m", "edgec", "compile", str(DIGITS), "--spec",
                             str(spec), "-o", "out", "--cache-dir", str(tmp / "cache"), "-q"],
                            cwd=tmp, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return tmp / "out" / "report.html"


def test_report_is_self_contained(report):
    text = report.read_text()
    assert "<svg id='tradeoff'" in text and "class='budget'" in text
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in text and "<script" not in text


def test_report_reads_on_its_own(report):
    """A legend for the dot colours, scores in the metric's unit, a log latency axis with
    plain tick numbers, an agreement axis that stops at 100 %, and report.txt's notes."""
    import re

    text = report.read_text()
    assert "<p id='legend'>" in text and "misses a budget" in text and "chosen" in text
    assert "<th>accuracy (top1-agreement)</th>" in text and "<td>100.00 %</td>" in text
    assert "latency, ms (p50, log scale)" in text
    ticks = re.findall(r"<text class='tick'[^>]*>([^<]*)</text>", text)
    assert ticks and not any("e+" in t or "e-" in t for t in ticks), ticks
    percents = [float(t.rstrip(" %")) for t in ticks if t.endswith("%")]
    assert percents and max(percents) <= 100.0
    assert "<ul id='notes'>" in text and "onnxruntime CPU execution provider" in text
    assert "latency is estimated" in text
    assert "25.3 KiB</text>" in text and not re.search(r"\d{4}(\.\d)? KiB", text)


def _notes_of(**backend):
    from edgec.report import _notes

    manifest = {"backend": {"tuned": True, "notes": [], **backend}, "latency": {},
                "accuracy": {}}
    return _notes(manifest)


def test_untuned_and_backend_notes_are_in_the_html():
    notes = _notes_of(name="tvm", tuned=False,
                      notes=["not tuned: tuning for jetson-orin-nano needs the device"])
    assert notes[0].startswith("the chosen tvm module is UNTUNED")
    assert "not tuned: tuning for jetson-orin-nano needs the device" in notes


def test_labels_of_nearby_candidates_do_not_overlap():
    """Two onnxruntime points 15.6 and 29.9 ms beside a 2,094 ms untuned TVM point (the
    ResNet-18 report of issue 10): log axis, labels apart."""
    import re

    from edgec.report import _tradeoff_chart

    points = [("fp32 on ort", "rejected", 15.63, 1.0), ("fp32 on tvm", "rejected", 2094.0, 1.0),
              ("int8 (Conv, MatMul, Gemm) on ort", "chosen", 29.95, 0.9921),
              ("int8 (all ops) on ort", "rejected", 22.1, 0.953),
              ("int8 with per-layer fp32 fallback on ort", "held", 31.2, 0.9968)]
    manifest = {"candidates": [{"label": l, "status": s, "accuracy": a} for l, s, _, a in points],
                "accuracy": {"metric": "top1-agreement"},
                "spec": {"budget": {"latency": {"limit": {"value": 50, "unit": "ms"}}},
                         "accuracy": {"metric": "top1-agreement",
                                      "tolerance": {"value": 1, "unit": "%"}}}}
    measurements = {"candidates": [{"label": l, "latency": {"p50_ms": ms, "where": "host"}}
                                   for l, _, ms, _ in points]}
    svg = _tradeoff_chart(manifest, measurements)
    labels = [(float(x), float(y), s) for x, y, s in
              re.findall(r"<text class='label' x='([\d.]+)' y='([\d.]+)'>([^<]*)</text>", svg)]
    assert len(labels) == 5
    boxes = [(x, y - 11, x + 6.3 * len(s), y + 3) for x, y, s in labels]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    xs = {label: float(cx) for cx, label in
          re.findall(r"cx='([\d.]+)'[^>]*><title>([^<]*)</title>", svg)}
    # On a log axis the two onnxruntime fp32/int8 points are far apart, not on one spot.
    assert xs["int8 (Conv, MatMul, Gemm) on ort"] - xs["fp32 on ort"] > 60


def test_a_long_label_keeps_its_backend():
    """The dynamic LSTM/attention candidates' labels run past the chart's 44 characters:
    cut plainly they lost 'ort' ("... attention on  (+1 at this point)")."""
    import re

    from edgec.report import _tradeoff_chart

    points = [("fp32 on ort", "held", 0.386, 1.0),
              ("int8 (contiguous regions) + dynamic LSTM, attention on ort", "chosen", 0.355, 1.0)]
    manifest = {"candidates": [{"label": l, "status": s, "accuracy": a} for l, s, _, a in points],
                "accuracy": {"metric": "top1-agreement"},
                "spec": {"budget": {}, "accuracy": {"metric": "top1-agreement",
                                                    "tolerance": {"value": 1, "unit": "%"}}}}
    measurements = {"candidates": [{"label": l, "latency": {"p50_ms": ms, "where": "host"}}
                                   for l, _, ms, _ in points]}
    labels = re.findall(r"<text class='label'[^>]*>([^<]*)</text>", _tradeoff_chart(manifest, measurements))
    long = next(t for t in labels if "dynamic" in t)
    assert long.endswith("… on ort") and len(long) <= 44, long
    assert "fp32 on ort" in labels


@pytest.fixture(scope="module")
def chromium():
    """The browser (before `report` compiles anything): missing, a skip, or a failure
    where EDGEC_REQUIRE lists chromium."""
    if CHROMIUM is None:
        missing("chromium", "chromium is not installed (.ci/run installs it)")
    return CHROMIUM


def test_chart_is_drawn_in_headless_chromium(chromium, report, tmp_path):
    from PIL import Image

    shot = tmp_path / "shot.png"
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars",
         "--window-size=900,1400", f"--screenshot={shot}", report.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert shot.exists(), result.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    pixels = list(image.get_flattened_data()) if hasattr(image, "get_flattened_data") \
        else list(image.getdata())

    def count(rgb, tolerance=30):
        return sum(1 for p in pixels if all(abs(a - b) <= tolerance for a, b in zip(p, rgb)))

    assert count((0x1a, 0x7f, 0x37)) > 100, "the chosen candidate's dot is missing"
    assert count((0xcf, 0x22, 0x2e)) > 100, "the latency budget line or a rejected dot is missing"
    assert count((0xbf, 0x87, 0x00)) > 100, "the accuracy tolerance line is missing"


def test_the_budget_lines_keep_their_columns_with_a_long_budget_name():
    from edgec.report import _budget_lines
    lines = _budget_lines([{"name": "latency", "status": "held", "detail": "p50 within 5 ms"},
                           {"name": "not-slower-than-fp32", "status": "missed", "detail": "1 ms against 0.9 ms"}])
    assert [line.index("HELD") if "HELD" in line else line.index("MISSED") for line in lines] == [23, 23]
    assert [line.index(detail) for line, detail in zip(lines, ("p50", "1 ms"))] == [34, 34]
