"""Per-layer sensitivity: how much each quantized layer's int8 form departs from its
fp32 form.

``layer_sensitivity`` scores every quantized layer's own SQNR in one batched run of the
fp32 model with each layer's QDQ group beside it (`local_sqnr`: seconds, where
quantizing one layer at a time and running the whole model for each took minutes).
`Trials` (a calibrated copy of the model and its fp32 outputs) scores whole-model
trials; the mixed-precision fallback (`edgec.quantization.fallback`) ranks by these
scores and reuses the calibration for every trial.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterator, NamedTuple

import numpy as np
import onnx

from edgec.frontend import export_model, import_model
from edgec.ir.core import Model
from edgec.metrics import evaluate, higher_is_better
from edgec.progress import Progress
from edgec.quantization.arithmetic import run_exact
from edgec.quantization.observe import feed_batches, run, session
from edgec.quantization.qdq import Calibration, QuantConfig, apply, calibrate, candidate_nodes, prepare

class Trials:
    """A BN-folded, calibrated copy of the model, and its fp32 reference outputs."""

    def __init__(self, model: Model, samples: dict[str, np.ndarray], config: QuantConfig,
                 eval_samples: dict[str, np.ndarray] | None, progress: Progress | None,
                 calibration: Calibration | None = None, exact: bool = False):
        self.base = copy_model(model)
        # exact: score on the exact int8 path (the target accumulates in int32 where
        # this host's onnxruntime would saturate); the fp32 reference is run as usual.
        self.run = run_exact if exact else run
        prepare(self.base, config)
        self.config = config
        self.calibration = calibration or calibrate(self.base, samples, config, progress)
        self.eval_samples = eval_samples if eval_samples is not None else samples
        self.reference = run(export_model(model), self.eval_samples, base_dir=model.base_dir)

    def layers(self) -> list[str]:
        seen = dict.fromkeys(n.name for n in candidate_nodes(self.base, self.config) if n.name)
        return [n for n in seen if n not in set(self.config.exclude)]

    def outputs(self, config: QuantConfig) -> list[np.ndarray]:
        model = copy_model(self.base)
        apply(model, self.calibration, config)
        if self.run is run:  # external weights resolve in the model's folder
            return run(export_model(model), self.eval_samples, base_dir=model.base_dir)
        return self.run(export_model(model), self.eval_samples)

    def score(self, config: QuantConfig, metric: str, tolerance, labels=None):
        return evaluate(metric, tolerance, self.reference, self.outputs(config), labels)


def copy_model(model: Model) -> Model:
    """A copy of ``model`` through its ONNX form."""
    return import_model(export_model(model), base_dir=model.base_dir, check=False)


def layer_sensitivity(model: Model, samples: dict[str, np.ndarray], metric: str = "sqnr", *,
                      config: QuantConfig = QuantConfig(),
                      eval_samples: dict[str, np.ndarray] | None = None,
                      labels: np.ndarray | None = None,
                      progress: Progress | None = None,
                      trials: Trials | None = None) -> list[tuple[str, float]]:
    """(node name, score) for every layer the policy quantizes, most sensitive first.

    With ``metric`` sqnr (what the fallback ranks by) the score is each layer's own
    SQNR: its int8 output against its fp32 output with both fed the fp32 model's
    activations, every layer at once in one batched run (`local_sqnr`). With any other
    metric it is that metric of the whole model with only that layer quantized, one
    run of the model per layer (slow: minutes on a large model)."""
    trials = trials or Trials(model, samples, config, eval_samples, progress)
    layers = trials.layers()
    higher = higher_is_better(metric)
    if metric == "sqnr":
        scores = local_sqnr(trials, config, eval_samples if eval_samples is not None else samples,
                            progress=progress)
        return sorted(((n, scores.get(n, float("inf"))) for n in layers),
                      key=lambda s: (s[1], s[0]))
    out = []
    for done, name in enumerate(layers):
        result = trials.score(replace(config, only=(name,), exclude=()), metric, 0, labels)
        out.append((name, float(result.value)))
        if progress is not None:
            progress("sensitivity", done + 1, len(layers), name)
    return sorted(out, key=lambda s: (s[1] if higher else -s[1], s[0]))


# Samples the local analysis runs on: each layer's error is averaged over every element
# of its output, so a few samples rank layers as well as many.
LOCAL_SAMPLES = 8


def local_sqnr(trials: Trials, config: QuantConfig, samples: dict[str, np.ndarray], *,
               max_samples: int = LOCAL_SAMPLES, progress: Progress | None = None) -> dict[str, float]:
    """Every quantized layer's own SQNR in dB, from one batched run: the fp32 model,
    and beside it each layer's QDQ group (as the fully quantized model has it) reading
    the fp32 model's values, its output compared with the fp32 one in the graph itself
    (sums of squares), so only two scalars per layer leave onnxruntime."""
    full = copy_model(trials.base)
    apply(full, trials.calibration, config)
    proto, probes = _local_model(export_model(trials.base), export_model(full))
    if not probes:
        return {}
    feeds = {k: v[:max_samples] for k, v in samples.items()}
    noise = dict.fromkeys(probes, 0.0)
    signal = dict.fromkeys(probes, 0.0)
    sess = session(proto, base_dir=trials.base.base_dir)
    names = [o.name for o in sess.get_outputs()]
    wanted = {i.name for i in sess.get_inputs()}
    batches = feed_batches(list(proto.graph.input), {k: v for k, v in feeds.items() if k in wanted},
                           batch=2)
    for done, feed in enumerate(batches):
        results = dict(zip(names, sess.run(names, feed)))
        for layer, (noise_name, signal_name) in probes.items():
            noise[layer] += float(results[noise_name])
            signal[layer] += float(results[signal_name])
        if progress is not None:
            progress("sensitivity", done + 1, len(batches), "all layers at once")
    out = {}
    for layer in probes:
        n, s = noise[layer], signal[layer]
        out[layer] = float("inf") if n <= 0 else (10 * np.log10(s / n) if s > 0 else float("-inf"))
    return out

VALUE = "value:"  # key prefix of a quantized activation's own probe in `local_sqnr`


def _local_model(base: onnx.ModelProto, full: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    """``base`` (fp32) with, for each quantized node of ``full``, a copy of its QDQ group
    reading ``base``'s values, and for each quantized activation a copy of its
    QuantizeLinear/DequantizeLinear pair; two scalar outputs per probe: the sum of
    squares of its error and of its fp32 value. Probes of activations are keyed
    ``VALUE + name``."""
    local = _LocalModel(base, full)
    for group in _qdq_groups(full.graph):
        if group.activation and group.key in local.probes:
            continue  # an activation quantized by several Q/DQ pairs is probed once
        local.add_probe(group.key, group.members, group.result, local.reference_of(group.value),
                        group.prefix)
    return local.proto, local.probes


def _readers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    return readers


def _reader(readers: dict[str, list[onnx.NodeProto]], name: str, op_type: str):
    return next((r for r in readers.get(name, []) if r.op_type == op_type), None)


class _QDQGroup(NamedTuple):
    key: str                        # the probe's key: a node's name, or VALUE + an activation's
    members: list[onnx.NodeProto]   # the quantized model's nodes to copy
    result: str                     # the value they compute
    value: str                      # the fp32 value that one stands for (before a folded Relu)
    prefix: str                     # the copies' name prefix
    activation: bool                # an activation's own Q/DQ pair


def _qdq_groups(graph: onnx.GraphProto) -> Iterator[_QDQGroup]:
    """What `_local_model` probes in the quantized graph, in graph order: each quantized
    activation's QuantizeLinear/DequantizeLinear pair, and each quantized node with the
    Q/DQ pairs in front of it and the one after it, if any."""
    producer = {o: n for n in graph.node for o in n.output}
    readers = _readers(graph)
    constants = {t.name for t in graph.initializer}
    for index, node in enumerate(graph.node):
        prefix = f"local{index}/"
        if node.op_type == "QuantizeLinear" and node.input[0] not in constants:
            dq = _reader(readers, node.output[0], "DequantizeLinear")
            if dq is not None:
                yield _QDQGroup(VALUE + node.input[0], [node, dq], dq.output[0], node.input[0],
                                prefix, True)
            continue
        if node.op_type == "DequantizeLinear" or not node.name:
            continue
        group = []
        for name in dict.fromkeys(node.input):  # a node reading one value twice (x * x)
            dq = producer.get(name)
            if dq is not None and dq.op_type == "DequantizeLinear":
                group.append(dq)
                q = producer.get(dq.input[0])
                if q is not None and q.op_type == "QuantizeLinear":
                    group.append(q)
        if not group:
            continue  # not quantized
        result = node.output[0]
        tail = []
        q_out = _reader(readers, result, "QuantizeLinear")
        if q_out is not None:
            dq_out = _reader(readers, q_out.output[0], "DequantizeLinear")
            if dq_out is not None:
                tail = [q_out, dq_out]
                result = dq_out.output[0]
        yield _QDQGroup(node.name, [*reversed(group), node, *tail], result, node.output[0], prefix,
                        False)


class _LocalModel:
    """The model `local_sqnr` runs, built up one probe at a time: a copy of the fp32
    model without its outputs, to which each probe adds its copied QDQ group, the
    quantized model's own constants under ``q/`` names, and its two error sums."""

    def __init__(self, base: onnx.ModelProto, full: onnx.ModelProto):
        self.base = base
        self.full_inits = {t.name: t for t in full.graph.initializer}
        self.full_defined = {o for n in full.graph.node for o in n.output}
        self.base_defined = ({vi.name for vi in base.graph.input}
                             | {t.name for t in base.graph.initializer}
                             | {o for n in base.graph.node for o in n.output})
        self.base_readers = _readers(base.graph)
        self.proto = onnx.ModelProto()
        self.proto.CopyFrom(base)
        del self.proto.graph.output[:]
        self.copied: set[str] = set()  # the quantized model's constants already copied
        self.probes: dict[str, tuple[str, str]] = {}

    def reference_of(self, name: str) -> str:
        """The fp32 value a quantized ``name`` stands for: ``name``, or, where a Relu
        was folded into the quantization of its input, the Relu's output."""
        users = self.base_readers.get(name, [])
        if len(users) == 1 and users[0].op_type in ("Relu", "Clip") \
                and users[0].output[0] not in self.full_defined:
            return users[0].output[0]
        return name

    def add_probe(self, key: str, members: list[onnx.NodeProto], result: str, reference: str,
                  prefix: str) -> None:
        """Copies of ``members`` under ``prefix`` reading the fp32 model's values, and
        the sums of squares of ``result`` - ``reference`` and of ``reference``; none
        where the group reads something only the quantized model has."""
        if reference not in self.base_defined:
            return
        copies = self._copy_group(members, prefix)
        if copies is None:
            return
        self.proto.graph.node.extend(copies + _error_sums(prefix, prefix + result, reference))
        self.proto.graph.output.extend([onnx.ValueInfoProto(name=prefix + "noise"),
                                        onnx.ValueInfoProto(name=prefix + "signal")])
        self.probes[key] = (prefix + "noise", prefix + "signal")

    def _copy_group(self, members: list[onnx.NodeProto], prefix: str) -> list[onnx.NodeProto] | None:
        inside = {o for m in members for o in m.output}
        copies = []
        for m in members:
            inputs = []
            for name in m.input:
                source = self._source(name, inside, prefix)
                if source is None:
                    return None  # reads something only the quantized model has
                inputs.append(source)
            copy = onnx.NodeProto()
            copy.CopyFrom(m)
            del copy.input[:]
            copy.input.extend(inputs)
            del copy.output[:]
            copy.output.extend(prefix + o for o in m.output)
            copy.name = prefix + (m.name or m.op_type)
            copies.append(copy)
        return copies

    def _source(self, name: str, inside: set[str], prefix: str) -> str | None:
        """What a copied node reads for ``name``: the group's own copy, the quantized
        model's constant (copied in once, as ``q/name``), or the fp32 model's value."""
        if not name or name in inside:
            return prefix + name if name else name
        if name in self.full_inits and (name not in self.base_defined or name in self.copied
                                        or _differs(self.full_inits[name], self.base)):
            if name not in self.copied:
                t = onnx.TensorProto()
                t.CopyFrom(self.full_inits[name])
                t.name = "q/" + name
                self.proto.graph.initializer.append(t)
                self.copied.add(name)
            return "q/" + name
        if name in self.base_defined:
            return name
        return None


def _error_sums(prefix: str, result: str, reference: str) -> list[onnx.NodeProto]:
    """Nodes computing ``prefix + "noise"``, the sum of squares of ``result`` -
    ``reference``, and ``prefix + "signal"``, that of ``reference``."""
    from onnx import helper

    err = prefix + "error"
    return [helper.make_node("Sub", [result, reference], [err], name=prefix + "Sub"),
            helper.make_node("ReduceSumSquare", [err], [prefix + "noise"], keepdims=0,
                             name=prefix + "noise"),
            helper.make_node("ReduceSumSquare", [reference], [prefix + "signal"], keepdims=0,
                             name=prefix + "signal")]


def _differs(tensor: onnx.TensorProto, base: onnx.ModelProto) -> bool:
    """An initializer of the quantized model that base holds under the same name with
    other contents (it never should: quantization names its constants afresh)."""
    other = next((t for t in base.graph.initializer if t.name == tensor.name), None)
    return other is None or other.SerializeToString() != tensor.SerializeToString()
