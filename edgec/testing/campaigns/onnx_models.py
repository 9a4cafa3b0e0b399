"""Mutated ONNX models against `edgec opt` and `edgec compile` (issue 12, campaign b).

    python3 -m edgec.testing.campaigns onnx --count 10000 [--jobs 2] [--seed 0]
        [--memory-gb 2] [--timeout 60] [--keep DIR] [--compile-every K]

Each case takes one of the repository's own models (`edgec.testing.models`,
``spec_examples/digits.onnx``; some saved with external data) and applies one to three
seeded mutations: bit flips and truncations of the bytes, and field mutations of the
proto — dimensions (0, -1, 2**31, 10**12 ...), element types, attribute values,
external-data entries (locations outside the folder, devices, offsets past the end),
huge shapes fed to growing ops (ConstantOfShape, Expand, Tile, Range, Resize), op
types, domains, opset versions, rewired inputs, removed or duplicated nodes. Then it
runs ``edgec opt MODEL -o OUT`` and ``edgec compile MODEL --spec SPEC --backend ort``
(a target not at hand, so latency is estimated, not timed) in a forked child under
``RLIMIT_AS`` (2 GB) and a timeout. Every run must end with exit 0, 2, 3 or 4: no
internal error, no traceback, no MemoryError, no kill, no hang. The same seed gives
the same cases; a failing case is kept under ``--keep`` with its model and stderr.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgec.testing.campaigns.harness import Tally, run_cases

NAME = "onnx"
REPO = Path(__file__).resolve().parents[3]
SPEC = """target raspberry-pi-4
budget {
  latency < 1 s p50 at batch 1
}
optimize {
  precision fp32
  backend ort
}
"""

HOSTILE_DIMS = [0, -1, -7, 1, 2, 3, 2**31 - 1, 2**31, 2**32, 10**6, 10**9, 10**12, 2**62, 2**63 - 1]
HOSTILE_INTS = HOSTILE_DIMS + [-(2**63), 5, 100, 255, 1000]
HOSTILE_FLOATS = [0.0, -0.0, 1e38, -1e38, float("inf"), float("-inf"), float("nan"), 1e-45, 3.5]
LOCATIONS = ["../../../../../../../dev/zero", "../../etc/passwd", "/etc/passwd", "/dev/zero",
             "missing.data", ".", "..", "model.onnx", "", "a/../../x", "weights.data",
             "weights.data\x00x", "C:\\\\x", "\\\\server\\share"]
GROWING = ["ConstantOfShape", "Expand", "Tile", "Range", "Resize", "Pad", "OneHot", "Upsample"]


def _op_types() -> list[str]:
    try:
        return sorted({s.name for s in onnx.defs.get_all_schemas() if s.domain == ""})
    except Exception:  # noqa: BLE001
        return ["Add", "Relu", "Reshape", "Gemm", "Conv"]


def base_models() -> list[tuple[str, onnx.ModelProto]]:
    from edgec.testing import models

    out = [("mlp", models.mlp()), ("mlp-batchN", _symbolic_batch(models.mlp())),
           ("conv_bn_relu", models.conv_bn_relu()), ("scaling", models.scaling_model(12)),
           ("encoder", models.transformer_encoder(seq=8, hidden=16, heads=2, layers=1, ffn=32))]
    digits = REPO / "spec_examples" / "digits.onnx"
    if digits.exists():
        out.append(("digits", onnx.load(str(digits))))
    return out


def _symbolic_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in list(m.graph.input) + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = "N"
    return m


# --------------------------------------------------------------------------- mutations


def _tensors(m: onnx.ModelProto) -> list[onnx.TensorProto]:
    out = list(m.graph.initializer)
    for n in m.graph.node:
        for a in n.attribute:
            if a.HasField("t"):
                out.append(a.t)
    return out


def _value_infos(m: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    return list(m.graph.input) + list(m.graph.output) + list(m.graph.value_info)


def mutate_dims(m, rng: random.Random) -> str:
    choices = [("tensor", t) for t in _tensors(m) if len(t.dims)] + \
              [("vi", v) for v in _value_infos(m) if len(v.type.tensor_type.shape.dim)]
    if not choices:
        return "dims: nothing"
    kind, target = rng.choice(choices)
    value = rng.choice(HOSTILE_DIMS)
    if kind == "tensor":
        i = rng.randrange(len(target.dims))
        if rng.random() < 0.2:
            target.dims.append(value)
        else:
            target.dims[i] = value
        return f"dims: tensor {target.name}[{i}] = {value}"
    dims = target.type.tensor_type.shape.dim
    i = rng.randrange(len(dims))
    if rng.random() < 0.3:
        dims[i].dim_param = rng.choice(["N", "", "x" * 300])
    else:
        dims[i].dim_value = value
    return f"dims: value {target.name}[{i}] = {value}"


def mutate_dtype(m, rng) -> str:
    choices = _tensors(m) + _value_infos(m)
    if not choices:
        return "dtype: nothing"
    target = rng.choice(choices)
    dtype = rng.choice(list(range(0, 27)) + [99, -1])
    if isinstance(target, onnx.TensorProto):
        target.data_type = dtype
    else:
        target.type.tensor_type.elem_type = dtype
    return f"dtype: {target.name} = {dtype}"


def mutate_attribute(m, rng) -> str:
    nodes = [n for n in m.graph.node if len(n.attribute)]
    if not nodes:
        node = rng.choice(list(m.graph.node))
        a = node.attribute.add()
        a.name = rng.choice(["axis", "perm", "value", "to", "mode", "bogus"])
        a.type = onnx.AttributeProto.INT
        a.i = rng.choice(HOSTILE_INTS)
        return f"attribute: added {a.name} to {node.op_type}"
    node = rng.choice(nodes)
    a = rng.choice(list(node.attribute))
    how = rng.randrange(6)
    if how == 0:
        a.i = rng.choice(HOSTILE_INTS)
        a.type = onnx.AttributeProto.INT
    elif how == 1:
        a.f = rng.choice(HOSTILE_FLOATS)
        a.type = onnx.AttributeProto.FLOAT
    elif how == 2:
        del a.ints[:]
        a.ints.extend(rng.choice(HOSTILE_INTS) for _ in range(rng.randrange(0, 6)))
        a.type = onnx.AttributeProto.INTS
    elif how == 3:
        a.s = rng.choice([b"", b"\xff\xfe", b"constant", b"x" * 1000])
        a.type = onnx.AttributeProto.STRING
    elif how == 4:
        a.type = rng.randrange(0, 16)
    else:
        a.name = rng.choice(["", "axis", "perm", "nonsense"])
    return f"attribute: {node.op_type}.{a.name} ({how})"


def mutate_external(m, rng, folder_files: dict[str, bytes]) -> str:
    inits = list(m.graph.initializer)
    if not inits:
        return "external: nothing"
    t = rng.choice(inits)
    if t.data_location == TensorProto.EXTERNAL:
        data = b""  # already external (an earlier mutation): never read it here
    else:
        data = t.raw_data or (numpy_helper.to_array(t).tobytes() if t.data_type else b"")
    location = rng.choice(LOCATIONS)
    if location == "weights.data":
        folder_files["weights.data"] = bytes(data[:rng.randrange(0, len(data) + 1)]) \
            if rng.random() < 0.5 else bytes(data)
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.ClearField("int64_data")
    t.ClearField("int32_data")
    t.data_location = TensorProto.EXTERNAL
    del t.external_data[:]
    entries = [("location", location)]
    if rng.random() < 0.6:
        entries.append(("offset", str(rng.choice([0, 0, 1, -1, 10**12, 2**63]))))
    if rng.random() < 0.6:
        entries.append(("length", str(rng.choice([len(data), 0, -5, 10**12]))
                        if rng.random() < 0.9 else "abc"))
    if rng.random() < 0.1:
        entries.append(("checksum", "0"))
    for k, v in entries:
        e = t.external_data.add()
        e.key, e.value = k, v
    return f"external: {t.name} -> {location!r}"


def mutate_huge_shape(m, rng) -> str:
    """A growing op fed a huge constant shape, its output a graph output (so folding and
    every executor meet it)."""
    op = rng.choice(GROWING)
    size = rng.choice([10**5, 10**9, 10**12, 2**40, 2**62])
    name = f"huge_{len(m.graph.node)}"
    via_identity = rng.random() < 0.5
    inits, nodes = [], []

    def const(n, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), n))
        return n

    shape = const(name + "_shape", np.array([size, 1000, 1000], np.int64)[:rng.randrange(1, 4)])
    if via_identity:
        nodes.append(helper.make_node("Identity", [shape], [name + "_id"]))
        shape = name + "_id"
    one = const(name + "_one", np.ones((1, 1, 1), np.float32))
    if op == "ConstantOfShape":
        nodes.append(helper.make_node(op, [shape], [name]))
    elif op in ("Expand", "Tile"):
        nodes.append(helper.make_node(op, [one, shape], [name]))
    elif op == "Range":
        nodes.append(helper.make_node(op, [const(name + "_a", np.array(0, np.int64)),
                                           const(name + "_b", np.array(size, np.int64)),
                                           const(name + "_c", np.array(1, np.int64))], [name]))
    elif op in ("Resize", "Upsample"):
        scales = const(name + "_scales", np.array([1, 1, float(size)], np.float32))
        nodes.append(helper.make_node("Resize", [one, "", scales], [name], mode="nearest"))
    elif op == "Pad":
        pads = const(name + "_pads", np.array([0, 0, 0, size, size, size], np.int64))
        nodes.append(helper.make_node(op, [one, pads], [name]))
    elif op == "OneHot":
        nodes.append(helper.make_node(op, [const(name + "_i", np.arange(10, dtype=np.int64)),
                                           const(name + "_d", np.array(size, np.int64)),
                                           const(name + "_v", np.array([0, 1], np.float32))],
                                      [name]))
    m.graph.initializer.extend(inits)
    m.graph.node.extend(nodes)
    m.graph.output.append(helper.make_tensor_value_info(
        name, TensorProto.INT64 if op == "Range" else TensorProto.FLOAT,
        [1] if rng.random() < 0.5 else None))
    return f"huge: {op} {size}{' via Identity' if via_identity else ''}"


def mutate_op(m, rng, ops: list[str]) -> str:
    node = rng.choice(list(m.graph.node))
    how = rng.randrange(4)
    if how == 0:
        node.op_type = rng.choice(ops)
    elif how == 1:
        node.op_type = rng.choice(["", "NoSuchOp", "Relu\x00", "ai.onnx.Relu", "X" * 500])
    elif how == 2:
        node.domain = rng.choice(["com.microsoft", "ai.onnx.ml", "custom.domain", "ai.onnx"])
    else:
        node.op_type = rng.choice(GROWING)
    return f"op: {node.name or '?'} -> {node.domain}:{node.op_type}"


def mutate_wiring(m, rng) -> str:
    nodes = list(m.graph.node)
    node = rng.choice(nodes)
    how = rng.randrange(5)
    names = [v for n in nodes for v in n.output] + [i.name for i in m.graph.input] + \
            [t.name for t in m.graph.initializer]
    if how == 0 and len(node.input):
        node.input[rng.randrange(len(node.input))] = rng.choice(names + ["ghost", ""])
    elif how == 1:
        m.graph.node.remove(node)
    elif how == 2:
        m.graph.node.append(node)  # duplicate: two producers of one value
    elif how == 3 and len(nodes) > 1:
        m.graph.node.remove(node)
        m.graph.node.insert(0, node)  # out of order (or a cycle)
    else:
        node.output[0] = rng.choice(names)
    return f"wiring: {how} on {node.op_type}"


def mutate_opset(m, rng) -> str:
    v = rng.choice([1, 6, 7, 9, 11, 13, 17, 21, 22, 23, 30, 999, 10**9, -1])
    if rng.random() < 0.2:
        m.ir_version = rng.choice([0, 1, 3, 7, 10, 11, 99, -1])
        return f"ir_version: {m.ir_version}"
    del m.opset_import[:]
    m.opset_import.add().version = v
    return f"opset: {v}"


def mutate_raw_data(m, rng) -> str:
    inits = [t for t in m.graph.initializer if t.raw_data]
    if not inits:
        return "raw: nothing"
    t = rng.choice(inits)
    data = t.raw_data
    if rng.random() < 0.5:
        t.raw_data = data[:rng.randrange(0, len(data) + 1)]
    else:
        t.raw_data = data + bytes(rng.randrange(1, 64))
    return f"raw: {t.name} {len(data)} -> {len(t.raw_data)} bytes"


def mutate_bytes(data: bytes, rng) -> tuple[bytes, str]:
    if rng.random() < 0.5:
        b = bytearray(data)
        flips = rng.randrange(1, 9)
        for _ in range(flips):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        return bytes(b), f"bytes: {flips} bit flips"
    cut = rng.randrange(0, len(data))
    return data[:cut], f"bytes: truncated at {cut} of {len(data)}"


FIELD_MUTATIONS = ["dims", "dtype", "attribute", "external", "huge", "op", "wiring", "opset",
                   "raw"]


def make_case(index: int, seed: int, bases, ops) -> tuple[str, bytes, dict[str, bytes], list[str]]:
    """Case ``index``: (base name, model bytes, other files for its folder, mutations)."""
    rng = random.Random(f"{seed}:{index}")
    base_name, base = bases[rng.randrange(len(bases))]
    m = onnx.ModelProto()
    m.CopyFrom(base)
    files: dict[str, bytes] = {}
    done = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        kind = rng.choice(FIELD_MUTATIONS)
        try:
            if kind == "dims":
                done.append(mutate_dims(m, rng))
            elif kind == "dtype":
                done.append(mutate_dtype(m, rng))
            elif kind == "attribute":
                done.append(mutate_attribute(m, rng))
            elif kind == "external":
                done.append(mutate_external(m, rng, files))
            elif kind == "huge":
                done.append(mutate_huge_shape(m, rng))
            elif kind == "op":
                done.append(mutate_op(m, rng, ops))
            elif kind == "wiring":
                done.append(mutate_wiring(m, rng))
            elif kind == "opset":
                done.append(mutate_opset(m, rng))
            elif kind == "raw":
                done.append(mutate_raw_data(m, rng))
        except Exception as e:  # noqa: BLE001 - a mutation that cannot apply (onnx's own
            done.append(f"{kind}: skipped ({type(e).__name__})")  # helpers refuse some)
    try:
        data = m.SerializeToString()
    except Exception as e:  # noqa: BLE001 - protobuf refuses some values (bad enum ...)
        data = base.SerializeToString()
        done.append(f"serialize failed ({type(e).__name__}); base model")
    if rng.random() < 0.25:
        data, what = mutate_bytes(data, rng)
        done.append(what)
    return base_name, data, files, done


def cases(count: int, seed: int, start: int = 0, until: float | None = None):
    bases = base_models()
    ops = _op_types()
    for index in range(start, start + count):
        if until is not None and time.monotonic() > until:
            return  # out of time: the report says how many ran
        base_name, data, files, done = make_case(index, seed, bases, ops)

        def write(folder, data=data, files=files, done=done, base_name=base_name):
            with open(os.path.join(folder, "model.onnx"), "wb") as f:
                f.write(data)
            for name, content in files.items():
                with open(os.path.join(folder, name), "wb") as f:
                    f.write(content)
            with open(os.path.join(folder, "spec.edge"), "w") as f:
                f.write(SPEC)
            with open(os.path.join(folder, "mutations.txt"), "w") as f:
                f.write(f"base {base_name}\n" + "\n".join(done) + "\n")
            return os.path.join(folder, "model.onnx")

        yield f"case-{index:05d}", write


def commands(compile_every: int):
    def make(folder: str, model: str) -> list[tuple[str, list[str]]]:
        out = [("opt", ["opt", model, "-o", os.path.join(folder, "opt.onnx")])]
        index = int(os.path.basename(folder).rsplit("-", 1)[-1])
        if compile_every and index % compile_every == 0:
            out.append(("compile", ["compile", model, "--spec", os.path.join(folder, "spec.edge"),
                                    "--backend", "ort", "-o", os.path.join(folder, "art"),
                                    "--cache-dir", os.path.join(folder, "cache")]))
        return out
    return make


def campaign(count: int, *, seed: int = 0, jobs: int = 2, memory_gb: float = 2.0,
             timeout: int = 60, keep: str | None = None, compile_every: int = 1,
             start: int = 0, progress=None, max_seconds: float | None = None) -> Tally:
    """Run cases ``start`` to ``start + count``: `edgec opt` on each, and `edgec compile`
    on every ``compile_every``-th (0: none)."""
    _warm_up()
    until = None if max_seconds is None else time.monotonic() + max_seconds
    return run_cases(cases(count, seed, start, until), commands(compile_every), jobs=jobs,
                     memory=int(memory_gb * (1 << 30)), seconds=timeout, keep=keep,
                     progress=progress)


def _warm_up() -> None:
    """Import what every case needs once, in the parent, so forked children start warm."""
    import onnxruntime  # noqa: F401

    import edgec.cli  # noqa: F401
    import edgec.compiler  # noqa: F401
    from edgec.passmgr import default_registry

    default_registry()


def report(tally: Tally, seconds: float) -> str:
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(tally.by_kind.items()))
    codes = ", ".join(f"{k} {v}" for k, v in sorted(tally.by_code.items()))
    lines = [f"{tally.cases} models, {tally.runs} runs in {seconds:.0f} s: {kinds}",
             f"exit codes: {codes}",
             f"tracebacks/internal errors: {tally.by_kind.get('internal', 0)}; "
             f"limit hits (MemoryError/killed): {tally.by_kind.get('limit', 0)}; "
             f"hangs: {tally.by_kind.get('hang', 0)}"]
    for case, command, outcome in tally.failures[:50]:
        first = next((ln for ln in outcome.stderr.splitlines() if "error" in ln.lower()),
                     outcome.stderr.strip().splitlines()[-1] if outcome.stderr.strip() else "")
        lines.append(f"  {case} {command}: {outcome.kind} (exit {outcome.code}, signal "
                     f"{outcome.signal}) {first[:200]}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--start", type=int, default=0, help="first case index")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--memory-gb", type=float, default=2.0)
    parser.add_argument("--timeout", type=int, default=60, help="seconds per run")
    parser.add_argument("--keep", metavar="DIR", help="copy failing cases here")
    parser.add_argument("--max-seconds", type=float, metavar="S",
                        help="start no new case after S seconds (the report gives the count)")
    parser.add_argument("--compile-every", type=int, default=1, metavar="K",
                        help="run `edgec compile` on every K-th case too (0: opt only)")


def run(args) -> int:
    start = time.monotonic()
    last = [start]

    def progress(tally: Tally) -> None:
        now = time.monotonic()
        if now - last[0] >= 30:
            last[0] = now
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(tally.by_kind.items()))
            print(f"... {tally.cases} models, {tally.runs} runs ({kinds}), "
                  f"{now - start:.0f} s", file=sys.stderr, flush=True)

    tally = campaign(args.count, seed=args.seed, jobs=args.jobs, memory_gb=args.memory_gb,
                     timeout=args.timeout, keep=args.keep, compile_every=args.compile_every,
                     start=args.start, progress=progress, max_seconds=args.max_seconds)
    print(report(tally, time.monotonic() - start))
    return 0 if not tally.failures else 1
