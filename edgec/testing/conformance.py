"""ONNX backend conformance through edgec: every node test case onnx ships, and its light models.

A case runs in onnxruntime twice: once as onnx wrote it, to learn whether onnxruntime
itself handles it, and once after edgec imported it, transformed it (no passes, or a
pass pipeline) and exported it again. Both runs are compared with the case's expected
outputs exactly as ``onnx.backend.test.runner`` compares them: same count, same
shapes, same dtypes, ``assert_allclose`` at the case's ``rtol``/``atol`` (NaN equals
NaN), strings compared exactly, sequences element by element, empty optionals as None.

    python -m edgec.testing.conformance                  # default pipeline, every case
    python -m edgec.testing.conformance --no-passes      # import -> export only
    python -m edgec.testing.conformance --sample 200 --json
    python -m edgec.testing.conformance --constant-inputs   # inputs as initializers: folding runs the op
    python -m edgec.testing.conformance --pipeline quantize-int8 --lossy int8   # a lossy pass
    python -m edgec.testing.conformance --backend tvm --cases node  # legalize-tvm, then TVM
    python -m edgec.testing.conformance --backend tvm --cases node --no-legalize  # raw TVM

With ``--backend tvm`` the model edgec hands over (after ``legalize-tvm``, or as onnx
wrote it) is imported by TVM's relax ONNX frontend, built for llvm and run on this host
in a worker process (``edgec.testing.tvm_runner``); a case TVM cannot import, build or
run, or that edgec refuses because TVM is known to compute it wrongly, is "backend fails
on edgec output", and the report groups every failure by cause. Before legalize-tvm the
sweep binds each case's shape-like inputs (axes, shapes, sizes, scales, pads) to the values
the case feeds them, as ``edgec compile`` binds the batch (``bind_shape_inputs``;
``--no-bind-shape-inputs`` feeds them as the case does).

A lossy pass (quantization, fp16) is run with the case's own inputs as calibration data
(``PassContext.calibration_data``, one sample) and judged with a ``LossyTolerance``: a
case it leaves unmodified (its export is byte for byte the import -> export one) must
pass at the case's own tolerance; a case it modifies may instead be "pass within lossy
tolerance": same outputs, dtypes and shapes, non-float outputs exact, NaN/inf where
the expected output has them, and the float outputs' SQNR at least the tolerance's.

Only a case that onnxruntime passes on the original model says anything about edgec:
one it fails on is counted ("ORT fails on original") but is not an edgec defect.
"""

from __future__ import annotations

import argparse
import enum
import functools
import glob
import json
import os
import re
import sys
import time
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = [
    "Case",
    "CaseResult",
    "LOSSY_TOLERANCES",
    "LossyTolerance",
    "Outcome",
    "Report",
    "Transformation",
    "compare_outputs",
    "default_pipeline",
    "light_cases",
    "bind_shape_inputs",
    "SHAPE_INPUTS",
    "no_passes",
    "node_cases",
    "pipeline",
    "run_case",
    "run_cases",
    "run_original",
    "sample",
    "stop_tvm_workers",
    "tvm_backend",
    "calibration_samples",
    "with_constant_inputs",
    "main",
]

# The domain of onnx's training operators (Adagrad, Adam, Momentum, Gradient): they
# describe a training step, which edgec (an inference compiler) does not compile.
TRAINING_DOMAIN = "ai.onnx.preview.training"

CI_SAMPLE_SIZE = 200


class Outcome(str, enum.Enum):
    PASS = "pass"
    # A lossy transformation modified the case: outside the case's own tolerance, inside
    # the transformation's LossyTolerance.
    LOSSY_PASS = "pass within lossy tolerance"
    WRONG_RESULT = "wrong result"
    EDGEC_ERROR = "edgec error"
    # edgec produced a model onnxruntime refuses or cannot run: an edgec defect,
    # counted with the edgec errors but labelled apart.
    ORT_FAILS_ON_EDGEC_OUTPUT = "ORT fails on edgec output"
    # The backend under test (TVM with --backend tvm) cannot import, build or run
    # edgec's output: counted with the edgec errors, labelled apart.
    BACKEND_FAILS = "backend fails on edgec output"
    ORT_FAILS_ORIGINAL = "ORT fails on original"
    TRAINING_ONLY = "training-only"

    @property
    def is_edgec_defect(self) -> bool:
        return self in (Outcome.WRONG_RESULT, Outcome.EDGEC_ERROR, Outcome.ORT_FAILS_ON_EDGEC_OUTPUT,
                        Outcome.BACKEND_FAILS)


@dataclass(frozen=True)
class Case:
    """One conformance case: a model, its data sets (inputs, expected outputs) and tolerances."""

    name: str
    model: onnx.ModelProto
    data_sets: tuple[tuple[tuple[Any, ...], tuple[Any, ...]], ...]
    rtol: float
    atol: float
    source: str  # "node" or "light"
    base_dir: str | None = None
    variant: str = ""  # "" as onnx wrote it; "constant-inputs", "shape-inputs-bound": see
    # with_constant_inputs, bind_shape_inputs

    @property
    def training_only(self) -> bool:
        return any(op.domain == TRAINING_DOMAIN for op in self.model.opset_import) or any(
            node.domain == TRAINING_DOMAIN for node in self.model.graph.node)


@dataclass(frozen=True)
class CaseResult:
    name: str
    outcome: Outcome
    reason: str = ""  # one line; empty for a pass
    # Lossy transformations only: whether the transformation changed the exported model.
    modified: bool | None = None

    def to_json(self) -> dict:
        out = {"name": self.name, "outcome": self.outcome.value, "reason": self.reason}
        if self.modified is not None:
            out["modified"] = self.modified
        return out


@dataclass(frozen=True)
class LossyTolerance:
    """How far a lossy transformation's float outputs may move: the signal-to-quantization-
    noise ratio ``10·log10(Σ ref² / Σ (out - ref)²)`` over each output's finite values
    must reach ``min_sqnr_db``."""

    name: str
    min_sqnr_db: float

    def compare(self, expected: Sequence[Any], actual: Sequence[Any], rtol: float, atol: float) -> str | None:
        """None when ``actual`` is within this tolerance of ``expected``; else why not."""
        if len(actual) != len(expected):
            return f"{len(actual)} outputs, expected {len(expected)}"
        for i, (ref, out) in enumerate(zip(expected, actual)):
            problem = self._compare_one(ref, out, rtol, atol)
            if problem is not None:
                return f"output {i}: {problem}"
        return None

    def _compare_one(self, ref: Any, out: Any, rtol: float, atol: float) -> str | None:
        exact = _compare_one(ref, out, rtol, atol)
        if exact is None or not isinstance(ref, np.ndarray) or not isinstance(out, np.ndarray):
            return exact
        if out.shape != ref.shape or out.dtype != ref.dtype or ref.dtype.kind != "f" and \
                ref.dtype.name != "bfloat16":
            return exact  # shape, dtype and non-float values are not a matter of precision
        r, o = ref.astype(np.float64), out.astype(np.float64)
        for what, where in (("NaN", np.isnan), ("inf", np.isinf)):
            if not np.array_equal(where(r), where(o)) or what == "inf" and not np.array_equal(r[where(r)], o[where(o)]):
                return f"{what} where the expected output has none, or the reverse"
        finite = np.isfinite(r)
        signal = float(np.sum(r[finite] ** 2))
        noise = float(np.sum((o[finite] - r[finite]) ** 2))
        sqnr = np.inf if noise == 0 else (10 * np.log10(signal / noise) if signal > 0 else -np.inf)
        if sqnr >= self.min_sqnr_db:
            return None
        return f"SQNR {sqnr:.1f} dB < {self.min_sqnr_db:g} dB ({self.name}; {exact})"


# int8: 8-bit activations, 7/8-bit weights: 20 dB is a noise power of 1 % of the
# signal's, what per-tensor int8 keeps on a well-calibrated layer (~6 dB a bit, minus
# the range the calibration leaves unused). fp16: 11 significant bits (~66 dB a value);
# 40 dB leaves room for fp16 accumulation over long reductions.
LOSSY_TOLERANCES = {"int8": LossyTolerance("int8", 20.0), "fp16": LossyTolerance("fp16", 40.0)}


@dataclass(frozen=True)
class Transformation:
    """What edgec does to a model between import and export, as ONNX in -> ONNX out.

    ``apply`` may raise anything: every exception is an "edgec error". With
    ``calibration`` it is called as ``apply(proto, base_dir, calibration_data)`` with the
    case's own inputs (see ``calibration_samples``); with ``lossy`` a case the
    transformation modifies is judged by that tolerance where its own does not hold.
    """

    name: str
    apply: Callable[..., onnx.ModelProto]
    calibration: bool = False
    lossy: LossyTolerance | None = None
    # What runs the transformed model: None for onnxruntime; else
    # ``executor(proto, case) -> outputs per data set``, raising on failure (an
    # executor failure is "backend fails on edgec output").
    executor: Callable[[onnx.ModelProto, "Case"], list[list[Any]]] | None = None
    # The harness's own step on a case that onnxruntime passes, before edgec sees it
    # (``bind_shape_inputs`` for the tvm sweep): the case it returns is the one
    # transformed, run and compared.
    prepare: Callable[["Case"], "Case"] | None = None


# --------------------------------------------------------------------------- cases


@functools.lru_cache(maxsize=1)
def node_cases() -> tuple[Case, ...]:
    """Every node test case onnx generates (about 1,880), sorted by name.

    Collecting them executes onnx's case generators (about 10 s); the result is cached
    for the process.
    """
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators' own overflow warnings
        collected = collect_testcases(None)
    cases = []
    for tc in collected:
        data_sets = tuple((tuple(_to_numpy(x) for x in inputs), tuple(_to_numpy(x) for x in outputs))
                          for inputs, outputs in tc.data_sets)
        cases.append(Case(tc.name, tc.model, data_sets, tc.rtol, tc.atol, "node"))
    return tuple(sorted(cases, key=lambda c: c.name))


def _onnx_data_dir() -> str:
    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")


@functools.lru_cache(maxsize=1)
def light_cases() -> tuple[Case, ...]:
    """The light models onnx ships (``onnx/backend/test/data/light``), sorted by name.

    As in onnx's own runner: the tolerances come from ``data/real/<test>/data.json``,
    each graph input that is not an initializer gets ``arange(n) / n`` (float32, unknown
    dims as 1), and the expected outputs are ``light_<model>_output_<i>.pb``.
    """
    data_dir = _onnx_data_dir()
    tolerances = {}
    for path in glob.glob(os.path.join(data_dir, "real", "*", "data.json")):
        with open(path) as f:
            info = json.load(f)
        url = info.get("url", "")
        if url.startswith("onnx/backend/test/data/light/"):
            tolerances[os.path.basename(url)] = (info.get("rtol", 1e-3), info.get("atol", 1e-7))
    cases = []
    light_dir = os.path.join(data_dir, "light")
    for path in sorted(glob.glob(os.path.join(light_dir, "*.onnx"))):
        model = onnx.load(path)
        initializers = {t.name for t in model.graph.initializer}
        inputs = tuple(_dummy_input(vi) for vi in model.graph.input if vi.name not in initializers)
        prefix = os.path.splitext(path)[0]
        outputs = []
        for i in range(len(model.graph.output)):
            tensor = onnx.TensorProto()
            with open(f"{prefix}_output_{i}.pb", "rb") as f:
                tensor.ParseFromString(f.read())
            outputs.append(numpy_helper.to_array(tensor))
        rtol, atol = tolerances.get(os.path.basename(path), (1e-3, 1e-7))
        name = "test_" + os.path.basename(prefix)[len("light_"):]
        cases.append(Case(name, model, ((inputs, tuple(outputs)),), rtol, atol, "light", light_dir))
    return tuple(cases)


def _dummy_input(vi: onnx.ValueInfoProto) -> np.ndarray:
    # onnx.backend.test.runner.Runner.generate_dummy_data(random=False)
    shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim)
    n = int(np.prod(shape))
    return (np.arange(n).reshape(shape) / n).astype(np.float32)


def _to_numpy(x: Any) -> Any:
    if isinstance(x, onnx.TensorProto):
        return numpy_helper.to_array(x)
    if isinstance(x, (list, tuple)):
        return [_to_numpy(item) for item in x]
    if isinstance(x, np.generic):  # a few generators write a numpy scalar for a 0-d tensor
        return np.asarray(x)
    return x


def with_constant_inputs(case: Case) -> Case | None:
    """The case with every input written into the model as an initializer.

    Node cases feed everything through graph inputs, which leaves constant folding
    nothing to do; this variant makes ``fold-constants`` evaluate the case's operator
    itself. None when an input is not a plain tensor (a sequence, an empty optional)
    or the case has several data sets.
    """
    if len(case.data_sets) != 1:
        return None
    inputs, outputs = case.data_sets[0]
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    graph = model.graph
    existing = {t.name for t in graph.initializer}
    fed = [vi for vi in graph.input if vi.name not in existing]
    if len(fed) != len(inputs) or not all(isinstance(x, np.ndarray) for x in inputs):
        return None
    try:
        tensors = [numpy_helper.from_array(x, vi.name) for vi, x in zip(fed, inputs)]
    except Exception:  # a dtype numpy_helper cannot write
        return None
    for vi, tensor in zip(fed, tensors):
        if tensor.data_type != vi.type.tensor_type.elem_type:
            return None
    graph.initializer.extend(tensors)
    kept = [vi for vi in graph.input if vi.name in existing]
    del graph.input[:]
    graph.input.extend(kept)
    if model.ir_version < 4:  # initializers that are not inputs need IR 4
        model.ir_version = 4
    return Case(case.name, model, (((), outputs),), case.rtol, case.atol, case.source, case.base_dir,
                "constant-inputs")


# The inputs that give an output's shape, an axis or a size rather than data, by op
# type and input position: in a real model they are constants or Shape arithmetic
# that folds once the batch is bound (bind-dims); a node case feeds them as graph inputs.
SHAPE_INPUTS: dict[str, tuple[int, ...]] = {
    **{op: (1,) for op in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd",
                           "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
                           "ReduceSumSquare")},  # axes
    "Squeeze": (1,), "Unsqueeze": (1,),  # axes
    "Reshape": (1,), "Expand": (1,), "Tile": (1,),  # shape, shape, repeats
    "Slice": (1, 2, 3, 4),  # starts, ends, axes, steps
    "Pad": (1, 3),  # pads, axes
    "Resize": (1, 2, 3), "Upsample": (1,),  # roi, scales, sizes
    "TopK": (1,), "CumSum": (1,), "CumProd": (1,), "Split": (1,), "SplitToSequence": (1,),  # k, axis, split
    "OneHot": (1,), "Trilu": (1,),  # depth, k
    "ConstantOfShape": (0,), "Range": (0, 1, 2), "AffineGrid": (1,), "CenterCropPad": (1,),
    "Col2Im": (1, 2), "DFT": (1, 2), "STFT": (1, 3), "MaxUnpool": (2,),
    "HannWindow": (0,), "HammingWindow": (0,), "BlackmanWindow": (0,),
    "MelWeightMatrix": (0, 1, 2, 3, 4),
}


def bind_shape_inputs(case: Case) -> Case:
    """The case with its shape-like inputs (``SHAPE_INPUTS``) written into the model as
    initializers, holding the values the case feeds them.

    This is the tvm sweep's choice, as ``bind-dims`` is ``edgec compile``'s: TVM's
    importer needs axes, shapes, sizes, scales and pads as constants, which real models
    give (or compute from shapes that fold); a node case feeds them. An input is bound
    only when every use of it is such a slot of a main-graph node and every data set
    feeds it the same tensor; never all of a case's inputs (the case would then be
    computed by edgec's constant folding, not by the backend).
    """
    graph = case.model.graph
    initialized = {t.name for t in graph.initializer}
    fed = [vi for vi in graph.input if vi.name not in initialized]
    if not fed or not case.data_sets:
        return case
    slots: dict[str, bool] = {}

    def visit(g: onnx.GraphProto, top: bool) -> None:
        for node in g.node:
            shape_slots = SHAPE_INPUTS.get(node.op_type, ()) if node.domain in ("", "ai.onnx") else ()
            for position, name in enumerate(node.input):
                if name:
                    slots[name] = slots.get(name, True) and top and position in shape_slots
            for attribute in node.attribute:
                # A value a subgraph reads counts as data.
                for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                    visit(sub, False)
    visit(graph, True)
    outputs = {o.name for o in graph.output}
    bound = []
    for position, vi in enumerate(fed):
        if not slots.get(vi.name) or vi.name in outputs:
            continue
        values = [inputs[position] if position < len(inputs) else None for inputs, _ in case.data_sets]
        first = values[0]
        if not isinstance(first, np.ndarray) or _is_exotic(first) or first.dtype.kind not in "iuf" \
                or any(not isinstance(v, np.ndarray) or v.dtype != first.dtype or not np.array_equal(v, first)
                       for v in values[1:]):
            continue
        bound.append((position, vi.name, first))
    if not bound or len(bound) == len(fed):
        return case
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    names = {name for _, name, _ in bound}
    model.graph.initializer.extend(numpy_helper.from_array(value, name) for _, name, value in bound)
    kept = [vi for vi in model.graph.input if vi.name not in names]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    if model.ir_version < 4:  # initializers that are not inputs need IR 4
        model.ir_version = 4
    positions = {position for position, _, _ in bound}
    data_sets = tuple((tuple(x for i, x in enumerate(inputs) if i not in positions), outputs)
                      for inputs, outputs in case.data_sets)
    return Case(case.name, model, data_sets, case.rtol, case.atol, case.source, case.base_dir,
                "shape-inputs-bound")


def sample(cases: Sequence[Case], size: int = CI_SAMPLE_SIZE) -> list[Case]:
    """A deterministic sample of ``size`` cases, in name order.

    Cases are ranked by the CRC-32 of their name, so the sample does not depend on the
    machine or the Python hash seed, and a case that onnx adds or drops moves at most
    one other case in or out.
    """
    if size >= len(cases):
        return list(cases)
    ranked = sorted(cases, key=lambda c: (zlib.crc32(c.name.encode()), c.name))
    return sorted(ranked[:size], key=lambda c: c.name)


# --------------------------------------------------------------------------- transformations


def _round_trip(step: Callable[..., None] | None, *, with_data: bool = False) -> Callable[..., onnx.ModelProto]:
    def apply(proto: onnx.ModelProto, base_dir: str | None, calibration_data: Any = None) -> onnx.ModelProto:
        from edgec.frontend import export_model, import_model

        model = import_model(proto, base_dir=base_dir, check=True)
        if step is not None:
            step(model, calibration_data) if with_data else step(model)
        return export_model(model)
    return apply


def no_passes() -> Transformation:
    """import -> export, nothing in between."""
    return Transformation("no passes", _round_trip(None))


def pipeline(text: str | None = None, *, verify_each: bool = True, calibration: bool = False,
             lossy: LossyTolerance | str | None = None) -> Transformation:
    """import -> ``run_pipeline(text)`` -> export; ``None`` is the default pipeline.

    ``calibration``: the passes get the case's inputs as ``PassContext.calibration_data``;
    ``lossy`` (a ``LossyTolerance`` or a key of ``LOSSY_TOLERANCES``): see Transformation.
    """
    def step(model, calibration_data=None) -> None:
        from edgec.passmgr import run_pipeline
        from edgec.passmgr.base import PassContext

        context = PassContext(calibration_data=calibration_data) if calibration else None
        run_pipeline(model, text, verify_each=verify_each, context=context)
    if isinstance(lossy, str):
        lossy = LOSSY_TOLERANCES[lossy]
    return Transformation(text if text is not None else "default pipeline",
                          _round_trip(step, with_data=calibration), calibration, lossy)


def calibration_samples(case: Case) -> dict[str, np.ndarray]:
    """The case's own inputs as calibration data: ``{graph input: one sample}``, each
    tensor of the first data set with a leading sample axis of 1 (the model's inputs have
    fixed shapes and no batch axis; see ``edgec.quantization.observe.feed_batches``).
    Inputs that are not plain tensors (sequences, optionals) are left out."""
    initializers = {t.name for t in case.model.graph.initializer}
    fed = [vi.name for vi in case.model.graph.input if vi.name not in initializers]
    inputs = case.data_sets[0][0] if case.data_sets else ()
    return {name: x[None] for name, x in zip(fed, inputs)
            if isinstance(x, np.ndarray) and not _is_exotic(x)}


def tvm_backend(legalize: bool = True, *, timeout: float | None = None,
                bind_shapes: bool | None = None) -> Transformation:
    """The case through TVM: (import -> ``legalize-tvm`` -> export, unless ``legalize`` is
    False: the case as onnx wrote it) -> relax ONNX import -> build for llvm -> run on
    this host, in a worker process (see ``edgec.testing.tvm_runner``). With ``legalize``
    the tvm backend's refusals apply too (``edgec.backends.tvm_legality.miscompiled``),
    and (unless ``bind_shapes`` is False) the case's shape-like inputs are bound to the
    values it feeds them first (``bind_shape_inputs``)."""
    if bind_shapes is None:
        bind_shapes = legalize
    from edgec.testing.tvm_runner import DEFAULT_TIMEOUT, TVMWorker

    worker = _tvm_workers.setdefault(timeout or DEFAULT_TIMEOUT, TVMWorker(timeout or DEFAULT_TIMEOUT))

    def execute(proto: onnx.ModelProto, case: Case) -> list[list[Any]]:
        # Raw: TVM alone, without the refusals of constructs it computes wrongly.
        return worker.run(proto.SerializeToString(), [inputs for inputs, _ in case.data_sets],
                          refuse=legalize)

    if not legalize:
        return Transformation("tvm (raw import, no legalize-tvm)", lambda proto, base_dir: proto,
                              executor=execute)

    def legalize_tvm(proto: onnx.ModelProto, base_dir: str | None) -> onnx.ModelProto:
        from edgec.frontend import export_model, import_model
        from edgec.passes.legalize_tvm import LegalizeTVM
        from edgec.passmgr.base import PassContext

        model = import_model(proto, base_dir=base_dir, check=True)
        result = LegalizeTVM().run(model, PassContext())
        return export_model(result.model if result.model is not None else model)
    if bind_shapes:
        return Transformation("tvm after legalize-tvm (shape-like inputs bound)", legalize_tvm,
                              executor=execute, prepare=bind_shape_inputs)
    return Transformation("tvm after legalize-tvm", legalize_tvm, executor=execute)


_tvm_workers: dict[float, Any] = {}


def stop_tvm_workers() -> None:
    for worker in _tvm_workers.values():
        worker.stop()
    _tvm_workers.clear()


def default_pipeline() -> Transformation:
    return pipeline(None)


def step_transformation(name: str, step: Callable[[Any], None]) -> Transformation:
    """import -> ``step(model)`` (any in-place IR rewrite) -> export."""
    return Transformation(name, _round_trip(step))


# --------------------------------------------------------------------------- running


def _session_options():
    import onnxruntime as ort

    options = ort.SessionOptions()
    # onnxruntime runs the graph as written: its own rewrites would only blur which
    # of the two models (original, edgec's) a difference comes from.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 4
    return options


def _run_ort(model: onnx.ModelProto, case: Case) -> list[list[Any]]:
    """Outputs of ``model`` in onnxruntime for each of the case's data sets."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), _session_options(),
                                   providers=["CPUExecutionProvider"])
    # Inputs feed the graph inputs that are not initializers, in order, as
    # onnxruntime's backend does; outputs are read by the original model's names.
    input_names = [i.name for i in session.get_inputs()]
    output_names = [o.name for o in case.model.graph.output]
    exotic_outputs = any(o.type.tensor_type.elem_type in _EXOTIC_TYPES for o in case.model.graph.output)
    results = []
    for inputs, _ in case.data_sets:
        if exotic_outputs or any(_is_exotic(x) for x in inputs):
            results.append(_run_with_ort_values(session, input_names, inputs, output_names))
        else:
            results.append(session.run(output_names, dict(zip(input_names, inputs))))
    return results


# Element types numpy has no type for (ml_dtypes provides them): onnxruntime's Python
# API neither accepts nor returns them as arrays, so they travel as raw OrtValue bytes.
_EXOTIC_TYPES = {
    onnx.TensorProto.BFLOAT16, onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.FLOAT8E4M3FNUZ,
    onnx.TensorProto.FLOAT8E5M2, onnx.TensorProto.FLOAT8E5M2FNUZ, onnx.TensorProto.UINT4,
    onnx.TensorProto.INT4, onnx.TensorProto.FLOAT4E2M1,
    *(getattr(onnx.TensorProto, n) for n in ("FLOAT8E8M0", "UINT2", "INT2") if hasattr(onnx.TensorProto, n)),
}
# Sub-byte types: onnxruntime packs them, lowest element in the lowest bits.
_PACKED_BITS = {onnx.TensorProto.UINT4: 4, onnx.TensorProto.INT4: 4, onnx.TensorProto.FLOAT4E2M1: 4,
                **{getattr(onnx.TensorProto, n): 2 for n in ("UINT2", "INT2") if hasattr(onnx.TensorProto, n)}}


def _is_exotic(x: Any) -> bool:
    return isinstance(x, np.ndarray) and x.dtype.type.__module__.startswith("ml_dtypes")


def _run_with_ort_values(session, input_names: list[str], inputs: Sequence[Any],
                         output_names: list[str]) -> list[Any]:
    import ctypes

    import onnxruntime as ort

    keep_alive = []  # an OrtValue made from an array borrows the array's memory
    feed = {}
    for name, x in zip(input_names, inputs):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"input '{name}': only tensors can travel as OrtValues, got {type(x).__name__}")
        x = x if x.flags.c_contiguous else x.copy()  # not ascontiguousarray: it makes 0-d 1-d
        keep_alive.append(x)
        if not _is_exotic(x):
            feed[name] = ort.OrtValue.ortvalue_from_numpy(x)
            continue
        onnx_type = onnx.helper.np_dtype_to_tensor_dtype(x.dtype)
        bits = _PACKED_BITS.get(onnx_type)
        if bits is None:
            raw = x.view(np.uint8 if x.dtype.itemsize == 1 else np.uint16)
            feed[name] = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(raw, onnx_type)
            continue
        value = ort.OrtValue.ortvalue_from_shape_and_type(list(x.shape), onnx_type)
        packed = _pack(x.view(np.uint8).reshape(-1), bits)
        size = value.tensor_size_in_bytes()
        if size:
            ctypes.memmove(value.data_ptr(), packed.ctypes.data, min(size, packed.nbytes))
        feed[name] = value
    outputs = []
    for value in session.run_with_ort_values(output_names, feed):
        onnx_type = value.element_type()
        if onnx_type not in _EXOTIC_TYPES:
            outputs.append(value.numpy())
            continue
        shape = tuple(value.shape())
        size = value.tensor_size_in_bytes()
        raw = np.frombuffer(ctypes.string_at(value.data_ptr(), size), dtype=np.uint8) if size else \
            np.zeros(0, np.uint8)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(onnx_type)
        bits = _PACKED_BITS.get(onnx_type)
        if bits is not None:
            raw = _unpack(raw, bits, int(np.prod(shape)))
        outputs.append(raw.view(dtype).reshape(shape))
    return outputs


def _pack(codes: np.ndarray, bits: int) -> np.ndarray:
    per_byte = 8 // bits
    mask = (1 << bits) - 1
    padded = np.zeros(-(-codes.size // per_byte) * per_byte, np.uint8)
    padded[: codes.size] = codes & mask
    groups = padded.reshape(-1, per_byte)
    packed = np.zeros(groups.shape[0], np.uint8)
    for k in range(per_byte):
        packed |= groups[:, k] << (k * bits)
    return packed


def _unpack(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    per_byte = 8 // bits
    mask = (1 << bits) - 1
    codes = np.stack([(packed >> (k * bits)) & mask for k in range(per_byte)], axis=1).reshape(-1)
    return np.ascontiguousarray(codes[:count]).astype(np.uint8)


def compare_outputs(expected: Sequence[Any], actual: Sequence[Any], rtol: float, atol: float) -> str | None:
    """None when ``actual`` matches ``expected`` as onnx's backend runner requires; else why not."""
    if len(actual) != len(expected):
        return f"{len(actual)} outputs, expected {len(expected)}"
    for i, (ref, out) in enumerate(zip(expected, actual)):
        problem = _compare_one(ref, out, rtol, atol)
        if problem is not None:
            return f"output {i}: {problem}"
    return None


def _compare_one(ref: Any, out: Any, rtol: float, atol: float) -> str | None:
    if ref is None or out is None:  # an empty optional
        return None if ref is None and out is None else f"got {_kind(out)}, expected {_kind(ref)}"
    if isinstance(ref, (list, tuple)) or isinstance(out, (list, tuple)):
        if not (isinstance(ref, (list, tuple)) and isinstance(out, (list, tuple))):
            return f"got {_kind(out)}, expected {_kind(ref)}"
        if len(out) != len(ref):
            return f"sequence of {len(out)} elements, expected {len(ref)}"
        for j, (r, o) in enumerate(zip(ref, out)):
            problem = _compare_one(r, o, rtol, atol)
            if problem is not None:
                return f"element {j}: {problem}"
        return None
    out, ref = np.asarray(out), np.asarray(ref)
    if out.shape != ref.shape:
        return f"shape {out.shape}, expected {ref.shape}"
    if ref.dtype == object or out.dtype == object:  # strings
        return None if np.array_equal(out, ref) else "strings differ"
    if out.dtype != ref.dtype:
        return f"dtype {out.dtype}, expected {ref.dtype}"
    output_rtol = rtol
    if out.dtype.type.__module__.startswith("ml_dtypes"):
        # numpy cannot compare ml_dtypes' types (bfloat16, float8, int4, ...) with a
        # Python float; onnx's runner casts to float32 and allows two bfloat16 ULPs.
        if out.dtype.name == "bfloat16":
            output_rtol = max(rtol, 2**-6)
        out, ref = out.astype(np.float32), ref.astype(np.float32)
    try:
        np.testing.assert_allclose(out, ref, rtol=output_rtol, atol=atol)
    except AssertionError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if ln.startswith("Mismatched")), lines[0] if lines else "")
        return f"values differ at rtol={output_rtol:g} atol={atol:g} ({detail})"
    return None


def _kind(x: Any) -> str:
    if x is None:
        return "an empty optional"
    if isinstance(x, (list, tuple)):
        return "a sequence"
    return "a tensor"


def _first_line(e: BaseException) -> str:
    from edgec.diagnostics import EdgecError

    if isinstance(e, EdgecError) and e.diagnostics:
        d = e.diagnostics[0]
        text = f"{d.location}: {d.message}" if d.location and str(d.location) else d.message
        return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def _ort_failure(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0][:300]}" if lines else type(e).__name__


def _check(case: Case, model: onnx.ModelProto,
           lossy: LossyTolerance | None = None,
           executor: Callable[[onnx.ModelProto, Case], list[list[Any]]] | None = None,
           ) -> tuple[str | None, str | None, bool]:
    """(executor failure, mismatch, whether ``lossy`` was needed): at most one of the
    first two is set. With ``lossy``, outputs outside the case's tolerance are compared
    again with it. The executor is onnxruntime unless one is given."""
    try:
        results = (executor or _run_ort)(model, case)
    except Exception as e:  # onnxruntime raises its own and plain exception types
        return (_ort_failure(e) if executor is None else str(e)), None, False
    needed = False
    for (_, expected), actual in zip(case.data_sets, results):
        problem = compare_outputs(expected, actual, case.rtol, case.atol)
        if problem is not None and lossy is not None:
            problem, needed = lossy.compare(expected, actual, case.rtol, case.atol), True
        if problem is not None:
            return None, problem, needed
    return None, None, needed


_original_results: dict[tuple[str, str], CaseResult | None] = {}


def run_original(case: Case) -> CaseResult | None:
    """How onnxruntime does on the model as onnx wrote it: None when it passes, else the
    "training-only" or "ORT fails on original" result. Cached per case."""
    key = (case.source, case.name, case.variant)
    if key not in _original_results:
        result: CaseResult | None = None
        if case.training_only:
            result = CaseResult(case.name, Outcome.TRAINING_ONLY, f"uses {TRAINING_DOMAIN}")
        else:
            failure, mismatch, _ = _check(case, case.model)
            if failure or mismatch:
                result = CaseResult(case.name, Outcome.ORT_FAILS_ORIGINAL, failure or f"wrong result: {mismatch}")
        _original_results[key] = result
    return _original_results[key]


def run_case(case: Case, transformation: Transformation) -> CaseResult:
    """The outcome of ``case`` through edgec with ``transformation``."""
    original = run_original(case)
    if original is not None:
        return original
    if transformation.prepare is not None:
        case = transformation.prepare(case)
    model = onnx.ModelProto()
    model.CopyFrom(case.model)  # edgec must not depend on, or alter, the case's own proto
    try:
        if transformation.calibration:
            transformed = transformation.apply(model, case.base_dir, calibration_samples(case))
        else:
            transformed = transformation.apply(model, case.base_dir)
    except Exception as e:  # every failure inside edgec, expected or a bug, is a finding
        return CaseResult(case.name, Outcome.EDGEC_ERROR, _first_line(e))
    modified = None
    if transformation.lossy is not None:
        # Unmodified means byte for byte what import -> export alone writes; only a
        # modified case may use the lossy tolerance.
        try:
            plain = no_passes().apply(_copy(case.model), case.base_dir)
            modified = transformed.SerializeToString(deterministic=True) != plain.SerializeToString(deterministic=True)
        except Exception:
            modified = True
    failure, mismatch, lossy = _check(case, transformed, transformation.lossy if modified else None,
                                      transformation.executor)
    if failure:
        outcome = Outcome.ORT_FAILS_ON_EDGEC_OUTPUT if transformation.executor is None else \
            Outcome.BACKEND_FAILS
        return CaseResult(case.name, outcome, failure, modified)
    if mismatch:
        return CaseResult(case.name, Outcome.WRONG_RESULT, mismatch, modified)
    return CaseResult(case.name, Outcome.LOSSY_PASS if lossy else Outcome.PASS, "", modified)


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


@dataclass
class Report:
    transformation: str
    results: list[CaseResult] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        by_outcome = Counter(r.outcome for r in self.results)
        lossy = {}
        if any(r.modified is not None for r in self.results):  # a lossy transformation
            lossy = {
                "pass, not modified": sum(r.outcome is Outcome.PASS and not r.modified for r in self.results),
                "pass, modified": sum(r.outcome is Outcome.PASS and bool(r.modified) for r in self.results),
                "pass within lossy tolerance": by_outcome[Outcome.LOSSY_PASS],
            }
        return {
            "cases": len(self.results),
            "training-only": by_outcome[Outcome.TRAINING_ONLY],
            "ORT fails on original": by_outcome[Outcome.ORT_FAILS_ORIGINAL],
            "pass": by_outcome[Outcome.PASS],
            **lossy,
            "wrong result": by_outcome[Outcome.WRONG_RESULT],
            "edgec error": by_outcome[Outcome.EDGEC_ERROR] + by_outcome[Outcome.ORT_FAILS_ON_EDGEC_OUTPUT]
            + by_outcome[Outcome.BACKEND_FAILS],
            "of which ORT fails on edgec output": by_outcome[Outcome.ORT_FAILS_ON_EDGEC_OUTPUT],
            **({"of which the backend fails": by_outcome[Outcome.BACKEND_FAILS]}
               if by_outcome[Outcome.BACKEND_FAILS] else {}),
        }

    def causes(self) -> list[tuple[str, int, list[str]]]:
        """edgec's defects grouped by cause (the reason with numbers and quoted names
        blurred): (cause, count, case names), most frequent first."""
        groups: dict[str, list[str]] = {}
        for r in self.defects:
            groups.setdefault(_cause(r), []).append(r.name)
        return sorted(((c, len(names), names) for c, names in groups.items()),
                      key=lambda item: (-item[1], item[0]))

    @property
    def defects(self) -> list[CaseResult]:
        return [r for r in self.results if r.outcome.is_edgec_defect]

    def render(self, *, list_all: bool = True) -> str:
        counts = self.counts()
        eligible = counts["cases"] - counts["training-only"] - counts["ORT fails on original"]
        passed = counts["pass"] + counts.get("pass within lossy tolerance", 0)
        rate = f"{100.0 * passed / eligible:.1f} %" if eligible else "n/a"
        width = max(len(k) for k in counts)
        lines = [f"edgec conformance: {self.transformation} ({self.seconds:.0f} s)"]
        lines += [f"  {k:<{width}}  {v:>5}" for k, v in counts.items()]
        lines.append(f"  pass rate where onnxruntime passes the original: {rate}")
        causes = self.causes()
        if causes:
            lines.append("failures by cause:")
            for cause, count, names in causes:
                example = names[0] + (f" (+{count - 1})" if count > 1 else "")
                lines.append(f"  {count:>5}  {cause}  [{example}]")
        shown = [r for r in self.results if r.outcome not in (Outcome.PASS, Outcome.LOSSY_PASS)]
        if not list_all:
            shown = self.defects
        order = {o: i for i, o in enumerate([Outcome.WRONG_RESULT, Outcome.EDGEC_ERROR,
                                             Outcome.ORT_FAILS_ON_EDGEC_OUTPUT, Outcome.BACKEND_FAILS,
                                             Outcome.ORT_FAILS_ORIGINAL,
                                             Outcome.TRAINING_ONLY])}
        for r in sorted(shown, key=lambda r: (order[r.outcome], r.name)):
            lines.append(f"{r.outcome.value}: {r.name}: {r.reason}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"transformation": self.transformation, "seconds": round(self.seconds, 1),
                "counts": self.counts(),
                "causes": [{"cause": c, "count": n, "cases": names} for c, n, names in self.causes()],
                "results": [r.to_json() for r in self.results]}


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"(?<![A-Za-z_])-?\d+(\.\d+)?(e-?\d+)?")


def _cause(result: CaseResult) -> str:
    """A failure's reason with what differs between cases of one cause blurred: quoted
    names, numbers, and the details after "values differ"."""
    reason = result.reason
    if result.outcome is Outcome.WRONG_RESULT:
        return "wrong result: " + _NUMBER.sub("N", reason.split(" (")[0])
    return _NUMBER.sub("N", _QUOTED.sub("'…'", reason))[:160]


def run_cases(cases: Iterable[Case], transformation: Transformation,
              progress: Callable[[CaseResult], None] | None = None) -> Report:
    report = Report(transformation.name)
    start = time.perf_counter()
    for case in cases:
        result = run_case(case, transformation)
        report.results.append(result)
        if progress is not None:
            progress(result)
    report.seconds = time.perf_counter() - start
    return report


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgec.testing.conformance",
        description="Run onnx's backend node test cases and light models through edgec and "
                    "onnxruntime; print counts per class and every case that did not pass.")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--pipeline", metavar="TEXT", help="pass pipeline (default: the default pipeline)")
    which.add_argument("--no-passes", action="store_true", help="import -> export only")
    parser.add_argument("--sample", type=int, metavar="N",
                        help=f"a deterministic sample of N node cases (CI uses {CI_SAMPLE_SIZE})")
    parser.add_argument("--cases", choices=("all", "node", "light"), default="all")
    parser.add_argument("-k", metavar="SUBSTRING", help="only cases whose name contains SUBSTRING")
    parser.add_argument("--constant-inputs", action="store_true",
                        help="write each node case's inputs into the model as initializers, so "
                             "that constant folding evaluates the operator (cases with sequence "
                             "or optional inputs are left out)")
    parser.add_argument("--lossy", choices=sorted(LOSSY_TOLERANCES), metavar="TOLERANCE",
                        help="the pipeline is lossy: give it each case's inputs as calibration "
                             "data and accept modified cases within this tolerance "
                             f"({', '.join(sorted(LOSSY_TOLERANCES))})")
    parser.add_argument("--backend", choices=("ort", "tvm"), default="ort",
                        help="what runs edgec's output: onnxruntime (the pass pipeline's "
                             "conformance), or TVM: legalize-tvm, relax ONNX import, build for "
                             "llvm, run on this host (--pipeline does not apply)")
    parser.add_argument("--no-legalize", action="store_true",
                        help="with --backend tvm: hand TVM the case as onnx wrote it (the "
                             "before figure)")
    parser.add_argument("--no-bind-shape-inputs", action="store_true",
                        help="with --backend tvm: feed shape-like inputs (axes, shapes, sizes, "
                             "scales, pads, ...) as the case does instead of binding them to the "
                             "case's values (see bind_shape_inputs)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="with --backend tvm: seconds one case may take (default 300)")
    parser.add_argument("--shard", metavar="I/N",
                        help="only every N-th case starting at the I-th (0-based), to run a "
                             "sweep in N processes")
    parser.add_argument("--progress", action="store_true",
                        help="print each case's outcome to stderr as it is known")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--defects-only", action="store_true",
                        help="list only edgec's defects, not ORT's failures and training-only cases")
    args = parser.parse_args(argv)

    if args.backend == "tvm":
        if args.pipeline or args.no_passes or args.lossy:
            parser.error("--backend tvm runs legalize-tvm only: --pipeline, --no-passes and "
                         "--lossy do not apply")
        transformation = tvm_backend(not args.no_legalize, timeout=args.timeout,
                                     bind_shapes=False if args.no_bind_shape_inputs else None)
    elif args.no_legalize:
        parser.error("--no-legalize needs --backend tvm")
    else:
        transformation = no_passes() if args.no_passes else pipeline(
            args.pipeline, calibration=args.lossy is not None, lossy=args.lossy)
    cases: list[Case] = []
    if args.cases in ("all", "node"):
        nodes = list(node_cases())
        cases += sample(nodes, args.sample) if args.sample else nodes
    if args.cases in ("all", "light"):
        cases += light_cases()
    if args.k:
        cases = [c for c in cases if args.k in c.name]
    if args.shard:
        try:
            index, count = (int(part) for part in args.shard.split("/"))
            if not 0 <= index < count:
                raise ValueError
        except ValueError:
            parser.error(f"--shard takes I/N with 0 <= I < N, not '{args.shard}'")
        cases = cases[index::count]
    if args.constant_inputs:
        cases = [v for v in (with_constant_inputs(c) if c.source == "node" else c for c in cases) if v is not None]
    progress = None
    if args.progress:
        def progress(result: CaseResult) -> None:
            print(f"{result.outcome.value}: {result.name}: {result.reason}", file=sys.stderr, flush=True)
    try:
        report = run_cases(cases, transformation, progress)
    finally:
        stop_tvm_workers()
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.render(list_all=not args.defects_only))
    return 1 if report.defects else 0


if __name__ == "__main__":
    sys.exit(main())
