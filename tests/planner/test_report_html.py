"""report.html renders in headless Chromium with its chart drawn: the candidates' dots and
the budget lines are on the screenshot."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_chart_is_drawn_in_headless_chromium(report, tmp_path):
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
