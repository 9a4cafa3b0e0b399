"""spec_examples/: the valid ones check clean and print back to themselves; each file in
spec_examples/invalid/ gives exactly the errors its ``# expect-error:`` lines name."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgec.dsl import check_spec, check_text, load_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "spec_examples"
INVALID = EXAMPLES / "invalid"

VALID = sorted(EXAMPLES.glob("*.edge"))
BROKEN = sorted(INVALID.glob("*.edge"))
EXPECT = re.compile(r"#\s*expect-error:\s*(?:(?P<file>[\w.\-]+\.edge):)?(?P<line>\d+):(?P<col>\d+)"
                    r"\s+(?P<message>.*)$")


def test_there_are_examples():
    names = {p.name for p in VALID}
    assert {"jetson.edge", "host.edge", "rpi4.edge"} <= names
    assert len(BROKEN) >= 10


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_example_checks_clean(path: Path):
    spec, diagnostics = check_spec(path)
    assert spec is not None, "\n".join(d.render() for d in diagnostics)
    assert diagnostics == [], "\n".join(d.render() for d in diagnostics)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_resolved_spec_round_trips(path: Path):
    spec = load_spec(path)
    text = spec.to_text()
    again, diagnostics = check_text(text, "<resolved>")
    assert diagnostics == [], "\n".join(d.render() for d in diagnostics)
    assert again == spec
    def body(printed: str) -> list[str]:  # without the "# resolved from" header
        return [line for line in printed.splitlines() if not line.startswith("#")]
    assert body(again.to_text()) == body(text)


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.name)
def test_invalid_example_gives_its_expected_errors(path: Path):
    expected = []
    for line in path.read_text().splitlines():
        match = EXPECT.search(line)
        if match:
            expected.append((match["file"] or path.name, int(match["line"]), int(match["col"]),
                             match["message"].strip()))
    assert expected, f"{path.name} has no '# expect-error:' line"
    spec, diagnostics = check_spec(path)
    assert spec is None
    errors = [d for d in diagnostics if d.is_error]
    got = [(Path(d.location.path).name, d.location.line, d.location.column, d.message)
           for d in errors]
    assert len(got) == len(expected), "\n".join(d.render() for d in errors)
    for (file, line, col, message), (gfile, gline, gcol, gmessage) in zip(expected, got):
        assert (file, line, col) == (gfile, gline, gcol), gmessage
        assert message in gmessage
    for error in errors:  # every error can be shown with its line and a caret
        assert error.source_line is not None and "^" in error.render()


@pytest.mark.parametrize("path", [p for p in VALID if load_spec(p).accuracy.data], ids=lambda p: p.name)
def test_example_data_loads_for_the_example_model(path: Path):
    """Every example's accuracy data (and labels) load for spec_examples/digits.onnx, the
    model the README compiles them with: a glob that also caught the labels file once
    made `edgec compile ... --spec pruning.edge` exit 2."""
    import onnx

    from edgec.data import load_labels, load_samples, model_inputs

    spec = load_spec(path)
    inputs = model_inputs(onnx.load(EXAMPLES / "digits.onnx"))
    samples = load_samples(spec.accuracy.data, inputs)
    count = len(samples["input"])
    assert count > 0
    if spec.accuracy.labels:
        assert len(load_labels(spec.accuracy.labels)) == count
