"""The synthetic texture task and the CNNs fitted to it (edgec.testing.tasks)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from edgec.frontend import export_model, import_model
from edgec.quantization import QuantConfig, quantize_static
from edgec.quantization.observe import run
from edgec.testing import models
from edgec.testing.tasks import TextureTask, fit_to_task


def test_samples_are_seeded_labelled_and_distinct():
    task = TextureTask(size=32)
    x, y = task.sample(40, seed=3)
    assert x.shape == (40, 3, 32, 32) and x.dtype == np.float32
    assert y.shape == (40,) and y.dtype == np.int64 and set(y) <= set(range(10))
    again, labels = task.sample(40, seed=3)
    np.testing.assert_array_equal(x, again)
    np.testing.assert_array_equal(y, labels)
    other, _ = task.sample(40, seed=4)
    assert not np.allclose(x, other)
    # Roughly unit variance, like normalized camera images.
    assert 0.3 < float(x.std()) < 3.0
    # Samples of one class differ from each other (translation, jitter, noise).
    same = np.flatnonzero(y == y[0])
    assert len(same) > 1 and not np.allclose(x[same[0]], x[same[1]])


def test_classes_differ_by_what_they_show():
    """The class is recoverable from the image: a nearest-class-mean rule on the
    images' amplitude spectra (blind to translation) beats chance by far."""
    task = TextureTask(size=64, noise=0.5)
    x, y = task.sample(200, seed=1)
    spectrum = lambda a: np.abs(np.fft.rfft2(a)).reshape(len(a), -1)  # noqa: E731
    train, test = spectrum(x[:150]), spectrum(x[150:])
    means = np.stack([train[y[:150] == c].mean(0) for c in range(task.classes)])
    predicted = ((test[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert np.mean(predicted == y[150:]) > 0.8


@pytest.fixture(scope="module")
def fitted() -> tuple[onnx.ModelProto, TextureTask]:
    task = TextureTask()
    return fit_to_task(models.mobilenet_v2(), task, train=240, holdout=80), task


def _logits(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return run(proto, {"input": x})[0]


def test_fitted_mobilenet_is_confident_and_accurate_on_its_task(fitted):
    proto, task = fitted
    onnx.checker.check_model(proto, full_check=True)
    assert [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim] == [1, task.classes]
    assert float(dict((p.key, p.value) for p in proto.metadata_props)["edgec.testing.task_accuracy"]) > 0.9
    x, y = task.sample(60, seed=7)  # a seed fit_to_task did not use
    logits = _logits(proto, x)
    assert np.mean(logits.argmax(1) == y) > 0.9
    top2 = np.sort(logits, axis=1)[:, -2:]
    # The median margin between the two largest logits is a sizeable share of their
    # spread, unlike the unfitted model's nearly flat logits on noise.
    assert np.median((top2[:, 1] - top2[:, 0]) / logits.std(1)) > 1.0


def test_int8_keeps_the_fitted_mobilenets_decisions(fitted):
    """Static int8 (default policy, MinMax on 16 task samples) keeps top-1 on at
    least 58 of 60 fresh task samples (the benchmark measures 500)."""
    proto, task = fitted
    calibration, _ = task.sample(16, seed=1)
    model = import_model(proto)
    quantize_static(model, {"input": calibration}, QuantConfig())
    x, _ = task.sample(60, seed=2)
    agree = np.mean(_logits(export_model(model), x).argmax(1) == _logits(proto, x).argmax(1))
    assert agree >= 58 / 60


def test_fit_to_task_refuses_a_model_without_a_classifier_head():
    with pytest.raises(ValueError, match="classifier Gemm"):
        fit_to_task(models.conv_bn_relu(), TextureTask(size=16))
