"""Metrics: each built-in's value and verdict, string tolerances, direction."""

import numpy as np
import pytest

from edgec.diagnostics import UsageError
from edgec.metrics import evaluate, higher_is_better

REF = [np.array([[1.0, 2.0, 0.0], [3.0, 0.0, 1.0]], np.float32)]
CAND = [np.array([[1.0, 1.9, 0.0], [0.0, 0.5, 1.0]], np.float32)]


def test_top1_agreement():
    r = evaluate("top1-agreement", "50%", REF, CAND)
    assert r.value == 0.5 and r.held is True
    assert evaluate("top1-agreement", "1%", REF, CAND).held is False


def test_accuracy_needs_labels_and_compares_points():
    labels = np.array([1, 0])
    r = evaluate("accuracy", "1%", REF, CAND, labels)
    assert (r.value, r.reference_value, r.held) == (0.5, 1.0, False)
    with pytest.raises(UsageError):
        evaluate("accuracy", "1%", REF, CAND)


def test_error_metrics():
    assert evaluate("max-abs-error", 3.5, REF, CAND).held is True
    assert evaluate("max-abs-error", 0.1, REF, CAND).value == pytest.approx(3.0)
    sq = evaluate("sqnr", "30dB", REF, REF)
    assert sq.value == float("inf") and sq.held is True
    noisy = evaluate("sqnr", "30dB", REF, CAND)
    assert noisy.value < 30 and noisy.held is False and isinstance(noisy.held, bool)
    cos = evaluate("cosine-similarity", 0.5, REF, CAND)
    assert 0 < cos.value < 1


def test_directions():
    assert higher_is_better("sqnr") and not higher_is_better("max-abs-error")
    with pytest.raises(UsageError):
        higher_is_better("no-such-metric")
