"""A synthetic image-classification task, and CNNs whose classifier is fitted to it.

Random-weight CNNs fed standard-normal noise give nearly flat logits: the gap between
the top two of 1000 logits is a few hundredths of their spread, so any perturbation
(int8, fp16, pruning) flips top-1 on a large share of inputs and "top-1 agreement"
says nothing about the perturbation. A trained network is confident on the data it
was trained for. This module builds that situation in code, with nothing downloaded:

* :class:`TextureTask`: ``classes`` texture classes. Each class is a few oriented
  colour gratings (class-specific spatial frequency, orientation, phase and colour);
  each sample is translated by up to a sixteenth of the image, has every grating's
  strength and its contrast jittered, and gets white noise, so no two samples are
  alike.
* :func:`fit_to_task`: takes a model from :mod:`edgec.testing.models` (random He
  backbone), sets every BatchNormalization's running statistics to those of the
  task's images, replaces the classifier with a ``classes``-wide one fitted by ridge
  regression on the backbone's features of task samples (a linear probe), and
  returns the model. Its held-out accuracy is written into the model's doc string
  and metadata (``edgec.testing.task_accuracy``).

Different ``seed`` values give independent sample sets; the benchmarks draw
calibration, evaluation and fitting samples from disjoint seeds of the same task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["TextureTask", "fit_to_task"]


@dataclass(frozen=True)
class TextureTask:
    """``classes`` classes of coloured textures, images [3, size, size], roughly unit variance."""

    classes: int = 10
    size: int = 224
    gratings: int = 3
    noise: float = 0.5
    cycles: tuple[float, float] = (1.0, 4.0)
    seed: int = 0

    def _class_parameters(self) -> tuple[np.ndarray, ...]:
        rng = np.random.default_rng([self.seed, 0x7E57])
        # cycles per image, log-uniform in ``cycles``; any orientation and phase; a
        # colour direction per grating.
        low, high = self.cycles
        frequency = np.exp(rng.uniform(math.log(low), math.log(high), (self.classes, self.gratings)))
        angle = rng.uniform(0.0, math.pi, (self.classes, self.gratings))
        phase = rng.uniform(0.0, 2 * math.pi, (self.classes, self.gratings))
        colour = rng.standard_normal((self.classes, self.gratings, 3))
        colour /= np.linalg.norm(colour, axis=-1, keepdims=True)
        return frequency, angle, phase, colour

    def sample(self, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``count`` images [count, 3, size, size] float32 and their labels [count] int64."""
        frequency, angle, phase, colour = self._class_parameters()
        rng = np.random.default_rng([self.seed, seed])
        labels = rng.integers(0, self.classes, count)
        coords = np.arange(self.size, dtype=np.float64) / self.size
        yy, xx = np.meshgrid(coords, coords, indexing="ij")
        images = np.empty((count, 3, self.size, self.size), dtype=np.float32)
        for index, label in enumerate(labels):
            # A translation by up to a sixteenth of the image each way, a little
            # jitter in each grating's strength and in contrast, and white noise.
            dx, dy = rng.uniform(-1 / 16, 1 / 16, 2)
            image = np.zeros((3, self.size, self.size), dtype=np.float64)
            for g in range(self.gratings):
                u = (xx - dx) * math.cos(angle[label, g]) + (yy - dy) * math.sin(angle[label, g])
                wave = np.cos(2 * math.pi * frequency[label, g] * u + phase[label, g])
                image += (rng.uniform(0.8, 1.2) * colour[label, g])[:, None, None] * wave
            image *= rng.uniform(0.8, 1.2)
            image += rng.normal(0.0, self.noise, image.shape)
            images[index] = image
        return images, labels.astype(np.int64)


def _symbolic_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose inputs' and outputs' leading dimension is ``N``, to run in batches."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for value in list(copy.graph.input) + list(copy.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    return copy


def fit_to_task(model: onnx.ModelProto, task: TextureTask, *, train: int = 600, holdout: int = 200,
                calibration: int = 16, ridges: tuple[float, ...] = (0.1, 1.0, 10.0),
                seed: int = 100) -> onnx.ModelProto:
    """The model with BN statistics of ``task`` images and a ridge-fitted ``task.classes``-wide head.

    ``model`` must end in ``Flatten -> Gemm(transB=1, alpha=beta=1)`` writing its only
    output, as :func:`edgec.testing.models.resnet18` and ``mobilenet_v2`` do. The
    head is a linear probe: ridge regression of centred one-hot targets on the
    standardized features, the ridge strength picked from ``ridges`` by accuracy on
    the held-out samples (ties go to the stronger one). Samples come from seeds
    ``seed`` (BN statistics), ``seed + 1`` (fitting) and ``seed + 2`` (held out);
    callers evaluate on other seeds.
    """
    from edgec.quantization.observe import run
    from edgec.testing.models import calibrate_batchnorms

    gemm = model.graph.node[-1]
    if gemm.op_type != "Gemm" or len(model.graph.output) != 1 or gemm.output[0] != model.graph.output[0].name:
        raise ValueError("fit_to_task needs a model whose last node is the classifier Gemm writing the output")
    attributes = {a.name: helper.get_attribute_value(a) for a in gemm.attribute}
    if attributes.get("alpha", 1.0) != 1.0 or attributes.get("beta", 1.0) != 1.0 or attributes.get("transB", 0) != 1:
        raise ValueError("fit_to_task expects the classifier Gemm to have alpha = beta = 1 and transB = 1")
    fitted = onnx.ModelProto()
    fitted.CopyFrom(model)
    x, _ = task.sample(calibration, seed)
    calibrate_batchnorms(fitted, np.random.default_rng(seed), feed=x)

    # The classifier's input, read as an extra output of a dynamic-batch copy.
    probe = _symbolic_batch(fitted)
    del probe.graph.output[:]
    probe.graph.output.append(onnx.ValueInfoProto(name=gemm.input[0]))
    name = probe.graph.input[0].name

    def features(count: int, sample_seed: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = task.sample(count, sample_seed)
        (f,) = run(probe, {name: x})
        return f.reshape(len(f), -1).astype(np.float64), y

    f_train, y_train = features(train, seed + 1)
    f_held, y_held = features(holdout, seed + 2)
    mean, std = f_train.mean(0), f_train.std(0) + 1e-6
    standard = (f_train - mean) / std
    targets = np.eye(task.classes)[y_train] - 1.0 / task.classes
    best = None
    for ridge in ridges:
        gram = standard.T @ standard + ridge * len(standard) * np.eye(standard.shape[1])
        weight = np.linalg.solve(gram, standard.T @ targets).T / std  # [classes, features]
        bias = -(weight @ mean)
        accuracy = float(np.mean((f_held @ weight.T + bias).argmax(-1) == y_held))
        if best is None or accuracy >= best[0]:
            best = (accuracy, ridge, weight, bias)
    accuracy, ridge, weight, bias = best
    initializers = {t.name: t for t in fitted.graph.initializer}
    for initializer, array in ((gemm.input[1], weight), (gemm.input[2], bias)):
        initializers[initializer].CopyFrom(numpy_helper.from_array(array.astype(np.float32), initializer))
    fitted.graph.output[0].type.tensor_type.shape.dim[1].dim_value = task.classes
    fitted.doc_string = (f"{model.doc_string} BN statistics from {task}; classifier fitted by ridge "
                         f"regression (ridge {ridge:g}) on {train} samples; held-out accuracy {accuracy:.4f} "
                         f"on {holdout} samples.")
    helper.set_model_props(fitted, {"edgec.testing.task": repr(task),
                                    "edgec.testing.task_accuracy": f"{accuracy:.4f}"})
    onnx.checker.check_model(fitted)
    return fitted
