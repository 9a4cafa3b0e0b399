"""ONNX ModelProto -> edgec IR, losslessly, with every problem reported as a located diagnostic.

Loading never reads a byte outside the model's folder: external data locations are
checked before anything is opened, and tensors with external data stay on disk until
a pass asks for their values.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Iterator

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from edgec.diagnostics import Diagnostic, DiagnosticSink, Location, ModelError
from edgec.ir.core import (Attr, ExternalData, Function, Graph, Model, NameScope, Node, Tensor,
                           Value)
from edgec.ir.types import (DataType, MapType, OpaqueType, OptionalType, SequenceType,
                            Shape, SparseTensorType, TensorType, Type)

A = onnx.AttributeProto


def load_model(path: str, *, check: bool = True) -> Model:
    """Read an ONNX file (``-`` for standard input) into the IR.

    Raises `ModelError` (exit 3) with a one-line diagnostic for anything that is not
    a valid model: garbage or truncated bytes, cycles, undefined values, unknown
    domains, external data outside the model's folder.
    """
    data, base_dir = read_model_bytes(path)
    display = "<stdin>" if path == "-" else path
    proto = parse_model_bytes(data, display)
    return import_model(proto, base_dir=base_dir, source=display, check=check)


def read_model_bytes(path: str) -> tuple[bytes, str]:
    """The bytes of a model file (``-``: standard input) and the folder its external
    data is relative to."""
    from edgec.safeio import read_regular_file

    if path == "-":
        data = sys.stdin.buffer.read(MAX_MODEL_BYTES + 1)
        if len(data) > MAX_MODEL_BYTES:
            raise ModelError(Diagnostic.error("the model on standard input is over protobuf's "
                                              "2 GiB limit", Location(path="<stdin>")))
        return data, os.getcwd()
    try:
        # A regular file (not /dev/zero, a FIFO or a terminal) within protobuf's limit:
        # weights beyond it live in external data.
        return read_regular_file(path, MAX_MODEL_BYTES), os.path.dirname(os.path.abspath(path))
    except OSError as e:
        raise ModelError(Diagnostic.error(f"cannot read the model: {e.strerror}",
                                          Location(path=path))) from None


MAX_MODEL_BYTES = 2 << 30


def parse_model_bytes(data: bytes, display: str = "<model>") -> onnx.ModelProto:
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelError(Diagnostic.error(
            f"not an ONNX model: the protobuf does not parse ({_one_line(e)})",
            Location(path=display))) from None
    if not proto.HasField("graph"):
        raise ModelError(Diagnostic.error(
            "not an ONNX model: it has no graph (empty, truncated or not a model file)",
            Location(path=display)))
    bad = _non_utf8_string(proto)
    if bad is not None:
        raise ModelError(Diagnostic.error(
            f"not a valid ONNX model: {bad} is not UTF-8 text", Location(path=display)))
    return proto


def _non_utf8_string(message, where: str = "") -> str | None:
    """Where a string field holds bytes that are not UTF-8 (protobuf hands those back as
    bytes, which no later assignment accepts); None when every string is text. Tensor
    data is not visited (it is bytes by design, and may be large)."""
    from google.protobuf.descriptor import FieldDescriptor as F

    stack = [(message, where or "model")]
    while stack:
        msg, path = stack.pop()
        is_tensor = isinstance(msg, onnx.TensorProto)
        for field, value in (_tensor_fields(msg) if is_tensor else msg.ListFields()):
            here = f"{path}.{field.name}"
            values = value if _repeated(field) else [value]
            if field.type == F.TYPE_STRING:
                if any(isinstance(v, bytes) for v in values):
                    return here
            elif field.type == F.TYPE_MESSAGE:
                stack.extend((v, here) for v in values)
    return None


def _tensor_fields(tp: onnx.TensorProto):
    for name in ("name", "doc_string", "external_data", "metadata_props"):
        field = tp.DESCRIPTOR.fields_by_name.get(name)
        if field is None:
            continue
        value = getattr(tp, name)
        if _repeated(field) and not len(value):
            continue
        if not _repeated(field) and not tp.HasField(name):
            continue
        yield field, value


def _repeated(field) -> bool:
    # protobuf 5 and later: is_repeated; older releases only have label.
    is_repeated = getattr(field, "is_repeated", None)
    if is_repeated is not None:
        return bool(is_repeated)
    return field.label == field.LABEL_REPEATED


def import_model(proto: onnx.ModelProto, *, base_dir: str | None = None,
                 source: str = "<model>", check: bool = True) -> Model:
    """Convert a ModelProto; with ``check`` the result is verified and onnx.checker
    is consulted, and every error becomes a `ModelError`."""
    importer = _Importer(base_dir, source)
    model = importer.model(proto)
    importer.sink.raise_if_errors(ModelError)
    if check:
        from edgec.ir.verifier import verify_model
        diagnostics = verify_model(model, source=source)
        errors = [d for d in diagnostics if d.is_error]
        if errors:
            raise ModelError(errors)
        _run_onnx_checker(proto, source)
    return model


def _run_onnx_checker(proto: onnx.ModelProto, source: str) -> None:
    # Our verifier gives located messages for structural problems; onnx.checker is
    # the backstop for schema-level ones (unknown operators, bad attributes).
    # Given a proto, the checker resolves external data against the current
    # directory; given the file's path, against the model's folder, as it must.
    target: onnx.ModelProto | str = proto
    if _uses_external_data(proto):
        if not os.path.isfile(source):
            return  # not from a file: our own external-data checks have run
        target = source
    try:
        onnx.checker.check_model(target)
    except onnx.checker.ValidationError as e:
        raise ModelError(Diagnostic.error(f"invalid model: {_checker_message(e)}",
                                          Location(path=source))) from None
    except ValueError as e:  # models over 2 GB: the checker refuses to serialize them
        if "2GB" not in str(e) and "2 GB" not in str(e):
            raise ModelError(Diagnostic.error(f"invalid model: {_one_line(e)}",
                                              Location(path=source))) from None


def _uses_external_data(proto: onnx.ModelProto) -> bool:
    def graph_uses(g: onnx.GraphProto) -> bool:
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in g.initializer):
            return True
        return any(graph_uses(sub) for n in g.node for a in n.attribute
                   for sub in ([a.g] if a.HasField("g") else list(a.graphs)))
    return graph_uses(proto.graph)


def _checker_message(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    # The checker appends a dump of the offending node; keep the sentence and the node's name.
    head = lines[0] if lines else "rejected by onnx.checker"
    for ln in lines[1:]:
        if ln.startswith("==> Context:"):
            head += f" ({ln[len('==> Context:'):].strip()})"
            break
    return head


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


class _Importer:
    def __init__(self, base_dir: str | None, source: str):
        self.base_dir = base_dir
        self.source = source
        self.sink = DiagnosticSink()

    def error(self, message: str, obj: str | None = None) -> None:
        self.sink.error(message, Location(path=self.source, obj=obj))

    # -- model
    def model(self, proto: onnx.ModelProto) -> Model:
        opsets: dict[str, int] = {}
        for op in proto.opset_import:
            opsets[op.domain] = op.version
        graph = self.graph(proto.graph, None)
        model = Model(
            graph=graph, ir_version=proto.ir_version, opset_imports=opsets,
            producer_name=proto.producer_name, producer_version=proto.producer_version,
            domain=proto.domain, model_version=proto.model_version,
            doc_string=proto.doc_string,
            metadata_props={p.key: p.value for p in proto.metadata_props},
            training_info=list(proto.training_info),
            configuration=list(proto.configuration),
            base_dir=self.base_dir,
        )
        for fp in proto.functions:
            f = self.function(fp)
            model.functions[f.identifier] = f
        return model

    def function(self, fp: onnx.FunctionProto) -> Function:
        scope = NameScope(None)
        graph = Graph(fp.name)
        for name in fp.input:
            v = Value(name)
            graph.add_input(v)
            scope.values[name] = v
        self._nodes(graph, fp.node, scope, value_info=fp.value_info)
        for name in fp.output:
            v = scope.lookup(name)
            if v is None:
                self.error(f"function '{fp.domain}.{fp.name}' returns '{name}', which its body "
                           "does not define")
                v = Value(name)
            graph.outputs.append(v)
        return Function(
            domain=fp.domain, name=fp.name, graph=graph, overload=fp.overload,
            attributes=list(fp.attribute),
            attribute_defaults={a.name: self.attribute(a, scope) for a in fp.attribute_proto},
            opset_imports={op.domain: op.version for op in fp.opset_import},
            doc_string=fp.doc_string,
            metadata_props={p.key: p.value for p in fp.metadata_props},
        )

    # -- graphs
    def graph(self, gp: onnx.GraphProto, parent_scope: NameScope | None) -> Graph:
        scope = NameScope(parent_scope)
        graph = Graph(gp.name, doc_string=gp.doc_string,
                      metadata_props={p.key: p.value for p in gp.metadata_props})
        for vi in gp.input:
            v = Value(vi.name, self.type(vi.type) if vi.HasField("type") else None,
                      doc_string=vi.doc_string,
                      metadata_props={p.key: p.value for p in vi.metadata_props})
            if vi.name in scope.values:
                self.error(f"graph '{gp.name}' declares input '{vi.name}' twice")
            graph.add_input(v)
            scope.values[vi.name] = v
        for tp in gp.initializer:
            tensor = self.tensor(tp)
            v = scope.values.get(tp.name)
            if v is None:
                v = Value(tp.name, TensorType(tensor.dtype, Shape(tensor.dims)))
                scope.values[tp.name] = v
            elif v.const is not None:
                self.error(f"initializer '{tp.name}' is defined twice")
                continue
            v.const = tensor
            graph.add_initializer(v)
        for sp in gp.sparse_initializer:
            name = sp.values.name
            tensor = Tensor(name=name, dtype=self.dtype(sp.values.data_type), dims=tuple(sp.dims))
            tensor.sparse_proto = sp
            v = scope.values.get(name)
            if v is None:
                v = Value(name, TensorType(tensor.dtype, Shape(tensor.dims)))
                scope.values[name] = v
            v.const = tensor
            graph.add_initializer(v)
        self._nodes(graph, gp.node, scope, value_info=gp.value_info)
        for vi in gp.output:
            v = scope.lookup(vi.name)
            if v is None:
                self.error(f"graph '{gp.name}' output '{vi.name}' is not produced by any node, "
                           "input or initializer")
                v = Value(vi.name)
            if vi.HasField("type"):
                v.type = self.type(vi.type)
            if vi.doc_string:
                v.doc_string = vi.doc_string
            for p in vi.metadata_props:
                v.metadata_props[p.key] = p.value
            graph.outputs.append(v)
        graph.quantization_annotation = list(gp.quantization_annotation)
        return graph

    def _nodes(self, graph: Graph, node_protos, scope: NameScope, value_info=()) -> None:
        # Outputs first, so that a reference to a value defined later (an unsorted
        # graph or a cycle) still resolves and the verifier can say what is wrong.
        pending: list[tuple[onnx.NodeProto, Node]] = []
        for np_ in node_protos:
            outputs = []
            for name in np_.output:
                v = Value(name)
                if name:
                    if name in scope.values:
                        self.error(f"value '{name}' is defined twice (second time by "
                                   f"{_describe_proto(np_)})")
                    scope.values[name] = v
                outputs.append(v)
            node = Node(np_.op_type, domain=np_.domain, name=np_.name, overload=np_.overload,
                        outputs=outputs, doc_string=np_.doc_string,
                        metadata_props={p.key: p.value for p in np_.metadata_props})
            node.device_configurations = list(np_.device_configurations)
            pending.append((np_, node))
        for vi in value_info:
            v = scope.values.get(vi.name)
            if v is None:
                continue  # value_info for a value this graph does not define: dropped
            if vi.HasField("type"):
                v.type = self.type(vi.type)
            v.doc_string = vi.doc_string
            for p in vi.metadata_props:
                v.metadata_props[p.key] = p.value
        for np_, node in pending:
            for a in np_.attribute:
                node.set_attr(a.name, self.attribute(a, scope))
            for name in np_.input:
                if not name:
                    node.append_input(None)
                    continue
                v = scope.lookup(name)
                if v is None:
                    self.error(f"{_describe_proto(np_)} reads '{name}', which no node, graph "
                               "input or initializer defines")
                    v = Value(name)
                node.append_input(v)
            graph.append(node)

    # -- attributes, tensors, types
    def attribute(self, a: onnx.AttributeProto, scope: NameScope) -> Attr:
        t = a.type
        if a.ref_attr_name:
            return Attr(a.name, t, None, ref_attr_name=a.ref_attr_name, doc_string=a.doc_string)
        if t == A.FLOAT:
            value = a.f
        elif t == A.INT:
            value = a.i
        elif t == A.STRING:
            value = _decode(a.s)
        elif t == A.TENSOR:
            value = self.tensor(a.t)
        elif t == A.GRAPH:
            value = self.graph(a.g, scope)
        elif t == A.SPARSE_TENSOR:
            value = a.sparse_tensor
        elif t == A.TYPE_PROTO:
            value = self.type(a.tp)
        elif t == A.FLOATS:
            value = list(a.floats)
        elif t == A.INTS:
            value = list(a.ints)
        elif t == A.STRINGS:
            value = [_decode(s) for s in a.strings]
        elif t == A.TENSORS:
            value = [self.tensor(x) for x in a.tensors]
        elif t == A.GRAPHS:
            value = [self.graph(g, scope) for g in a.graphs]
        elif t == A.SPARSE_TENSORS:
            value = list(a.sparse_tensors)
        elif t == A.TYPE_PROTOS:
            value = [self.type(x) for x in a.type_protos]
        else:
            self.error(f"attribute '{a.name}' has an unknown type {t}")
            value = None
        attr = Attr(a.name, t, value, doc_string=a.doc_string)
        return attr

    def tensor(self, tp: onnx.TensorProto) -> Tensor:
        external = None
        if tp.data_location == onnx.TensorProto.EXTERNAL:
            external = self.external_data(tp)
        problem = _tensor_size_problem(tp, external)
        if problem:
            self.error(problem, f"tensor '{tp.name}'")
            return Tensor(np.zeros(0, np.float32), name=tp.name)  # the import fails anyway
        return Tensor.from_proto(tp, external)

    def dtype(self, code: int) -> DataType:
        try:
            return DataType(code)
        except ValueError:
            self.error(f"unknown element type {code}")
            return DataType.UNDEFINED

    def external_data(self, tp: onnx.TensorProto) -> ExternalData | None:
        info = {e.key: e.value for e in tp.external_data}
        location = info.get("location", "")
        where = f"tensor '{tp.name}'"
        if self.base_dir is None:
            self.error("external data cannot be read for a model not loaded from a file", where)
            return None
        if not location:
            self.error("external data has no location", where)
            return None
        resolved = _resolve_inside(self.base_dir, location)
        if resolved is None:
            self.error(f"external data location '{location}' points outside the model's "
                       "folder; refusing to read it", where)
            return None
        try:
            offset = int(info.get("offset", "0"))
            length = int(info["length"]) if "length" in info else None
        except ValueError:
            self.error("external data has a non-integer offset or length", where)
            return None
        if offset < 0 or (length is not None and length < 0):
            self.error("external data has a negative offset or length", where)
            return None
        if not os.path.isfile(resolved):
            self.error(f"external data file '{location}' does not exist", where)
            return None
        size = os.path.getsize(resolved)
        if length is not None and offset + length > size:
            self.error(f"external data '{location}' is {size} bytes, too short for offset "
                       f"{offset} + length {length}", where)
            return None
        extra = tuple((k, v) for k, v in info.items() if k not in ("location", "offset", "length"))
        return ExternalData(location, offset, length, self.base_dir, extra)

    def type(self, tp: onnx.TypeProto) -> Type | None:
        return import_type(tp, self.dtype)


def import_type(tp: onnx.TypeProto, dtype: Callable[[int], DataType] | None = None
                ) -> Type | None:
    """The IR type of an ONNX TypeProto (None when it holds no type). ``dtype`` turns an
    element-type code into a DataType; by default an unknown code is UNDEFINED."""
    if dtype is None:
        dtype = _dtype_or_undefined
    which = tp.WhichOneof("value")
    if which == "tensor_type":
        tt = tp.tensor_type
        return TensorType(dtype(tt.elem_type), _shape(tt.shape) if tt.HasField("shape") else None)
    if which == "sparse_tensor_type":
        tt = tp.sparse_tensor_type
        return SparseTensorType(dtype(tt.elem_type),
                                _shape(tt.shape) if tt.HasField("shape") else None)
    if which == "sequence_type":
        st = tp.sequence_type
        return SequenceType(import_type(st.elem_type, dtype) if st.HasField("elem_type") else None)
    if which == "optional_type":
        ot = tp.optional_type
        return OptionalType(import_type(ot.elem_type, dtype) if ot.HasField("elem_type") else None)
    if which == "map_type":
        mt = tp.map_type
        return MapType(dtype(mt.key_type),
                       import_type(mt.value_type, dtype) if mt.HasField("value_type") else None)
    if which == "opaque_type":
        return OpaqueType(tp.opaque_type.domain, tp.opaque_type.name)
    return None


def _dtype_or_undefined(code: int) -> DataType:
    try:
        return DataType(code)
    except ValueError:
        return DataType.UNDEFINED


def _tensor_size_problem(tp: onnx.TensorProto, external: ExternalData | None) -> str | None:
    """Why ``tp``'s data cannot be what its dims and type say (None: it can). Checked at
    import, so that no pass ever reshapes or allocates from a size the bytes do not back."""
    if any(d < 0 for d in tp.dims):
        return f"has a negative dimension {list(tp.dims)}"
    count = 1
    for d in tp.dims:
        count *= d
    try:
        dtype = DataType(tp.data_type)
    except ValueError:
        return f"has an unknown element type {tp.data_type}"
    if dtype is DataType.UNDEFINED:
        return "has no element type"
    if dtype is DataType.STRING:
        held = len(tp.string_data)
        return None if held == count or tp.data_location == onnx.TensorProto.EXTERNAL else \
            f"declares {list(tp.dims)} ({count} strings) but holds {held}"
    bits = dtype.itemsize_bits
    nbytes = (count * bits + 7) // 8
    if tp.data_location == onnx.TensorProto.EXTERNAL:
        if external is None:
            return None  # reported by external_data
        # Exactly: the bytes read are `length`, or the rest of the file without one.
        available = external.length if external.length is not None else None
        if available is None:
            try:
                available = os.path.getsize(external.path) - external.offset
            except OSError:
                return None
        return None if available == nbytes else \
            f"declares {list(tp.dims)} {dtype.name} ({nbytes} bytes) but its external data " \
            f"holds {max(0, available)} bytes"
    if tp.HasField("raw_data"):
        held = len(tp.raw_data)
        return None if held == nbytes else \
            f"declares {list(tp.dims)} {dtype.name} ({nbytes} bytes) but holds {held} bytes"
    try:
        field = onnx.helper.tensor_dtype_to_field(tp.data_type)
    except (KeyError, ValueError, TypeError):
        return f"has an element type {tp.data_type} with no data field"
    held = len(getattr(tp, field))
    if dtype in (DataType.COMPLEX64, DataType.COMPLEX128):
        want = 2 * count
    elif bits < 8:
        want = nbytes  # packed: a byte (two values) per entry
    else:
        want = count
    if held == want or (held == 0 and count == 0):
        return None
    return f"declares {list(tp.dims)} ({count} elements) but holds {held} values"


def _shape(sp: onnx.TensorShapeProto) -> Shape:
    dims = []
    denotations = []
    for d in sp.dim:
        which = d.WhichOneof("value")
        if which == "dim_value":
            dims.append(int(d.dim_value))
        elif which == "dim_param":
            dims.append(d.dim_param)
        else:
            dims.append(None)
        denotations.append(d.denotation)
    return Shape(tuple(dims), tuple(denotations) if any(denotations) else ())


def _decode(raw: bytes) -> str | bytes:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def external_data_files(proto: onnx.ModelProto, base_dir: str, source: str = "<model>") -> list[str]:
    """The real paths of the files ``proto``'s external data lives in, each confined to
    ``base_dir`` (by `_resolve_inside`, the importer's own check) and a regular file,
    before anything opens, hashes or lists them. Raises `ModelError` (exit 3) naming the
    tensor otherwise."""
    files: set[str] = set()
    for tp in all_tensor_protos(proto):
        if tp.data_location != onnx.TensorProto.EXTERNAL and not len(tp.external_data):
            continue
        info = {e.key: e.value for e in tp.external_data}
        location = info.get("location", "")
        where = Location(path=source, obj=f"tensor '{tp.name}'")
        if not location:
            raise ModelError(Diagnostic.error("external data has no location", where))
        resolved = _resolve_inside(base_dir, location)
        if resolved is None:
            raise ModelError(Diagnostic.error(
                f"external data location '{location}' points outside the model's folder; "
                "refusing to read it", where))
        if not os.path.isfile(resolved):
            what = "does not exist" if not os.path.exists(resolved) else "is not a regular file"
            raise ModelError(Diagnostic.error(
                f"external data file '{location}' {what}", where))
        files.add(resolved)
    return sorted(files)


def all_tensor_protos(proto: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every TensorProto of ``proto``: initializers, sparse initializers' parts, tensor
    attributes, in subgraphs and function bodies too."""
    def graph(g):
        yield from g.initializer
        for st in g.sparse_initializer:
            yield st.values
            yield st.indices
        for n in g.node:
            for a in n.attribute:
                if a.HasField("t"):
                    yield a.t
                yield from a.tensors
                if a.HasField("g"):
                    yield from graph(a.g)
                for sub in a.graphs:
                    yield from graph(sub)
    yield from graph(proto.graph)
    for f in proto.functions:
        for n in f.node:
            for a in n.attribute:
                if a.HasField("t"):
                    yield a.t


def _resolve_inside(base_dir: str, location: str) -> str | None:
    """The real path of ``location`` under ``base_dir``, or None if it escapes it
    (absolute paths, ``..``, symlinks pointing elsewhere)."""
    if os.path.isabs(location) or location.startswith(("/", "\\")) or ":" in location \
            or "\x00" in location:
        return None
    base = os.path.realpath(base_dir)
    target = os.path.realpath(os.path.join(base, location))
    if os.path.commonpath([base, target]) != base:
        return None
    return target


def _describe_proto(np_: onnx.NodeProto) -> str:
    op = np_.op_type if not np_.domain else f"{np_.domain}::{np_.op_type}"
    if np_.name:
        return f"node '{np_.name}' ({op})"
    out = next((o for o in np_.output if o), None)
    return f"{op} node producing '{out}'" if out else f"unnamed {op} node"

