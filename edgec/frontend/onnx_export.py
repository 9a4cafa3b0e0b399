"""edgec IR -> ONNX ModelProto, and saving it (atomically, with external data when needed).

Tensors still described by the proto they were imported from are written back as
that proto, so a round trip with no passes is lossless byte for byte where ONNX
allows. Models whose weights exceed protobuf's 2 GB limit, or that came with
external data, are saved with their weights in ``<model file>.data`` beside them.
"""

from __future__ import annotations

import os
import sys
import tempfile

import onnx
from onnx import numpy_helper

from edgec.diagnostics import Diagnostic, Location, UsageError
from edgec.ir.core import Attr, Function, Graph, Model, Node, Tensor, Value
from edgec.ir.types import (MapType, OpaqueType, OptionalType, SequenceType, Shape,
                            SparseTensorType, TensorType, Type)

A = onnx.AttributeProto

# Protobuf cannot serialize a message of 2 GiB or more; stay clear of it.
_PROTOBUF_LIMIT = 2**31 - 2**26
# Tensors smaller than this stay inline even when a model is saved with external data.
_EXTERNAL_THRESHOLD = 1024


def export_model(model: Model) -> onnx.ModelProto:
    """The ONNX form of ``model``. External tensors keep their references, which are
    relative to ``model.base_dir``; use `save_model` to write them elsewhere."""
    mp = onnx.ModelProto()
    mp.ir_version = model.ir_version
    for domain, version in model.opset_imports.items():
        op = mp.opset_import.add()
        op.domain = domain
        op.version = version
    # ONNX is proto2: an empty field that is set differs from one never set, so
    # only non-default values are written, as onnx.helper does.
    _set(mp, producer_name=model.producer_name, producer_version=model.producer_version,
         domain=model.domain, model_version=model.model_version, doc_string=model.doc_string)
    _props(mp.metadata_props, model.metadata_props)
    _graph(model.graph, mp.graph)
    mp.training_info.extend(model.training_info)
    for f in model.functions.values():
        _function(f, mp.functions.add())
    if model.configuration:
        mp.configuration.extend(model.configuration)
    return mp


def save_model(model: Model, path: str) -> None:
    """Write ``model`` to ``path`` (``-``: standard output), atomically.

    Weights that were external, or that would push the file past protobuf's limit,
    go to ``<basename>.data`` in the same folder.
    """
    proto = export_model(model)
    external = [t for t in _all_tensors(model) if t.external is not None]
    inline_bytes = sum(t.nbytes for t in _all_tensors(model) if t.external is None)
    if path == "-":
        if external or inline_bytes > _PROTOBUF_LIMIT:
            raise UsageError(Diagnostic.error(
                "this model needs external data and cannot be written to standard output; "
                "give a file name with -o"))
        try:
            sys.stdout.buffer.write(proto.SerializeToString())
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            raise UsageError(Diagnostic.error(
                f"cannot write the model to standard output: {e.strerror}")) from None
        return
    from edgec.publish import ensure_folder, fault_point, ordinary_mode

    path = os.path.abspath(path)
    out_dir = os.path.dirname(path)
    if os.path.isdir(path):
        raise UsageError(Diagnostic.error("the output is a folder; give a file name",
                                          Location(path=path)))
    to_move: list[tuple[str, str]] = []
    try:
        ensure_folder(out_dir)
        if external or inline_bytes > _PROTOBUF_LIMIT:
            data_name = os.path.basename(path) + ".data"
            fd, data_tmp = tempfile.mkstemp(prefix=".edgec-", suffix=".data", dir=out_dir)
            to_move.append((data_tmp, os.path.join(out_dir, data_name)))
            with os.fdopen(fd, "wb") as data_file:
                _write_external(model, proto, data_file, data_name,
                                move_large=inline_bytes > _PROTOBUF_LIMIT)
        fd, model_tmp = tempfile.mkstemp(prefix=".edgec-", suffix=".onnx", dir=out_dir)
        to_move.append((model_tmp, path))
        with os.fdopen(fd, "wb") as f:
            f.write(proto.SerializeToString())
        fault_point("write", os.path.basename(path))
        # mkstemp makes 0600 files: give each the mode of the file it replaces, or the
        # ordinary 0666 minus the umask.
        for tmp, final in to_move:
            os.chmod(tmp, ordinary_mode(final))
        for tmp, final in to_move:
            os.replace(tmp, final)
    except OSError as e:
        for tmp, _ in to_move:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise UsageError(Diagnostic.error(f"cannot write the model: {e.strerror}",
                                          Location(path=path))) from None


def _write_external(model: Model, proto: onnx.ModelProto, data_file, data_name: str,
                    move_large: bool) -> None:
    """Copy external tensors (and, if needed, large inline ones) into ``data_file`` and
    point their protos at it. Streams in chunks: multi-GB weights never sit in memory."""
    protos = {id(t): p for t, p in _tensor_protos(model, proto)}
    offset = 0
    for tensor in _all_tensors(model):
        tp = protos.get(id(tensor))
        if tp is None:
            continue
        if tensor.external is None and not (move_large and tensor.nbytes >= _EXTERNAL_THRESHOLD):
            continue
        pad = (-offset) % 4096  # page-aligned, so loaders can mmap
        data_file.write(b"\0" * pad)
        offset += pad
        start = offset
        if tensor.external is not None:
            ext = tensor.external
            with open(ext.path, "rb", buffering=0) as src:  # raw: _hole_ahead moves the fd
                src.seek(ext.offset)
                remaining = ext.length
                while remaining is None or remaining > 0:
                    hole = _hole_ahead(src)
                    if hole:
                        hole = hole if remaining is None else min(hole, remaining)
                        src.seek(hole, os.SEEK_CUR)
                        data_file.seek(hole, os.SEEK_CUR)
                        offset += hole
                        if remaining is not None:
                            remaining -= hole
                        continue
                    chunk = src.read(1 << 24 if remaining is None else min(1 << 24, remaining))
                    if not chunk:
                        break
                    if chunk.count(0) == len(chunk):
                        # Zeros become a hole: a sparse source stays sparse (and fast).
                        data_file.seek(len(chunk), os.SEEK_CUR)
                    else:
                        data_file.write(chunk)
                    offset += len(chunk)
                    if remaining is not None:
                        remaining -= len(chunk)
        else:
            raw = numpy_helper.from_array(tensor.numpy()).raw_data
            data_file.write(raw)
            offset += len(raw)
        data_file.truncate(offset)  # materialize a trailing hole
        _clear_data(tp)
        tp.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", data_name), ("offset", str(start)),
                           ("length", str(offset - start))):
            e = tp.external_data.add()
            e.key, e.value = key, value


def _hole_ahead(src) -> int:
    """How many bytes of hole (unwritten, reading as zeros) the file has at its
    current position; 0 where the OS cannot tell. Skipping them keeps copying a
    sparse multi-GB weight file fast."""
    seek_data = getattr(os, "SEEK_DATA", None)
    if seek_data is None:
        return 0
    pos = src.tell()
    size = os.fstat(src.fileno()).st_size
    if pos >= size:
        return 0
    try:
        data = os.lseek(src.fileno(), pos, seek_data)
    except OSError:  # ENXIO: only a hole until the end (or not supported)
        data = size
    finally:
        os.lseek(src.fileno(), pos, os.SEEK_SET)
    return max(0, data - pos)


def _clear_data(tp: onnx.TensorProto) -> None:
    for field in ("float_data", "int32_data", "string_data", "int64_data", "double_data",
                  "uint64_data", "external_data"):
        tp.ClearField(field)
    tp.ClearField("raw_data")


def _all_tensors(model: Model):
    """Initializer and attribute tensors, main graph first, each once."""
    seen = set()
    for g in model.all_graphs():
        for v in g.initializers.values():
            t = v.const
            if t is not None and t.sparse_proto is None and id(t) not in seen:
                seen.add(id(t))
                yield t
        for node in g:
            for a in node.attributes.values():
                items = a.value if a.type == A.TENSORS else [a.value] if a.type == A.TENSOR else []
                for t in items:
                    if id(t) not in seen:
                        seen.add(id(t))
                        yield t


def _tensor_protos(model: Model, proto: onnx.ModelProto):
    """Pairs (IR tensor, its proto inside ``proto``), walking both in the same order."""
    def walk_graph(g: Graph, gp: onnx.GraphProto):
        dense = [v for v in g.initializers.values() if v.const.sparse_proto is None]
        for v, tp in zip(dense, gp.initializer):
            yield v.const, tp
        for node, np_ in zip(g, gp.node):
            for a, ap in zip(node.attributes.values(), np_.attribute):
                if a.type == A.TENSOR:
                    yield a.value, ap.t
                elif a.type == A.TENSORS:
                    yield from zip(a.value, ap.tensors)
                elif a.type == A.GRAPH:
                    yield from walk_graph(a.value, ap.g)
                elif a.type == A.GRAPHS:
                    for sub, sp in zip(a.value, ap.graphs):
                        yield from walk_graph(sub, sp)
    yield from walk_graph(model.graph, proto.graph)
    for f, fp in zip(model.functions.values(), proto.functions):
        for node, np_ in zip(f.graph, fp.node):
            for a, ap in zip(node.attributes.values(), np_.attribute):
                if a.type == A.TENSOR:
                    yield a.value, ap.t


# --------------------------------------------------------------------------- pieces


def _set(message, **fields) -> None:
    for name, value in fields.items():
        if value:
            setattr(message, name, value)


def _props(field, props: dict[str, str]) -> None:
    for k, v in props.items():
        e = field.add()
        e.key, e.value = k, v


def _graph(g: Graph, gp: onnx.GraphProto) -> None:
    _set(gp, name=g.name, doc_string=g.doc_string)
    _props(gp.metadata_props, g.metadata_props)
    for v in g.inputs:
        _value_info(v, gp.input.add())
    for name, v in g.initializers.items():
        t = v.const
        if t.sparse_proto is not None:
            gp.sparse_initializer.add().CopyFrom(t.sparse_proto)
        else:
            _tensor(t, gp.initializer.add(), name)
    interface = {id(v) for v in g.inputs} | {id(v) for v in g.outputs}
    for node in g:
        _node(node, gp.node.add())
        for o in node.outputs:
            if id(o) not in interface and o.name and _has_info(o):
                _value_info(o, gp.value_info.add())
    for v in g.outputs:
        _value_info(v, gp.output.add())
    gp.quantization_annotation.extend(g.quantization_annotation)


def export_node(node: Node, *, name: str | None = None) -> onnx.NodeProto:
    """The ONNX form of one node, as `export_model` writes it (subgraph attributes
    included); ``name`` replaces the node's own name."""
    np_ = onnx.NodeProto()
    _node(node, np_)
    if name is not None:
        np_.name = name
    return np_


def export_attribute(a: Attr) -> onnx.AttributeProto:
    """The ONNX form of one attribute."""
    ap = onnx.AttributeProto()
    _attribute(a, ap)
    return ap


def export_type(t: Type) -> onnx.TypeProto:
    """The ONNX form of an IR type."""
    tp = onnx.TypeProto()
    _type(t, tp)
    return tp


def _node(node: Node, np_: onnx.NodeProto) -> None:
    np_.input.extend("" if v is None else v.name for v in node.inputs)
    np_.output.extend(o.name or "" for o in node.outputs)
    if node.name:
        np_.name = node.name
    np_.op_type = node.op_type
    if node.domain:
        np_.domain = node.domain
    if node.overload:
        np_.overload = node.overload
    for a in node.attributes.values():
        _attribute(a, np_.attribute.add())
    if node.doc_string:
        np_.doc_string = node.doc_string
    _props(np_.metadata_props, node.metadata_props)
    if node.device_configurations:
        np_.device_configurations.extend(node.device_configurations)


def _has_info(v: Value) -> bool:
    return v.type is not None or bool(v.doc_string) or bool(v.metadata_props)


def _value_info(v: Value, vi: onnx.ValueInfoProto) -> None:
    vi.name = v.name or ""
    if v.type is not None:
        _type(v.type, vi.type)
    if v.doc_string:
        vi.doc_string = v.doc_string
    _props(vi.metadata_props, v.metadata_props)


def _type(t: Type, tp: onnx.TypeProto) -> None:
    if isinstance(t, TensorType):
        tp.tensor_type.elem_type = int(t.dtype)
        if t.shape is not None:
            _shape(t.shape, tp.tensor_type.shape)
    elif isinstance(t, SparseTensorType):
        tp.sparse_tensor_type.elem_type = int(t.dtype)
        if t.shape is not None:
            _shape(t.shape, tp.sparse_tensor_type.shape)
    elif isinstance(t, SequenceType):
        tp.sequence_type.SetInParent()
        if t.elem is not None:
            _type(t.elem, tp.sequence_type.elem_type)
    elif isinstance(t, OptionalType):
        tp.optional_type.SetInParent()
        if t.elem is not None:
            _type(t.elem, tp.optional_type.elem_type)
    elif isinstance(t, MapType):
        tp.map_type.key_type = int(t.key)
        if t.value is not None:
            _type(t.value, tp.map_type.value_type)
    elif isinstance(t, OpaqueType):
        tp.opaque_type.domain = t.domain
        tp.opaque_type.name = t.name
    else:
        raise TypeError(f"unknown IR type {t!r}")


def _shape(s: Shape, sp: onnx.TensorShapeProto) -> None:
    sp.SetInParent()
    if s.dims is None:
        return
    for i, d in enumerate(s.dims):
        dp = sp.dim.add()
        if isinstance(d, int):
            dp.dim_value = d
        elif isinstance(d, str):
            dp.dim_param = d
        if s.denotations and s.denotations[i]:
            dp.denotation = s.denotations[i]


def _tensor(t: Tensor, tp: onnx.TensorProto, name: str | None = None) -> None:
    if t.proto is not None:
        tp.CopyFrom(t.proto)
    else:
        tp.CopyFrom(numpy_helper.from_array(t.numpy()))
        _set(tp, doc_string=t.doc_string)
        _props(tp.metadata_props, t.metadata_props)
    if name is not None:
        tp.name = name
    elif t.name:
        tp.name = t.name


def _attribute(a: Attr, ap: onnx.AttributeProto) -> None:
    ap.name = a.name
    ap.type = a.type
    if a.doc_string:
        ap.doc_string = a.doc_string
    if a.ref_attr_name:
        ap.ref_attr_name = a.ref_attr_name
        return
    t, v = a.type, a.value
    if t == A.FLOAT:
        ap.f = v
    elif t == A.INT:
        ap.i = v
    elif t == A.STRING:
        ap.s = _encode(v)
    elif t == A.TENSOR:
        _tensor(v, ap.t)
    elif t == A.GRAPH:
        _graph(v, ap.g)
    elif t == A.SPARSE_TENSOR:
        ap.sparse_tensor.CopyFrom(v)
    elif t == A.TYPE_PROTO:
        _type(v, ap.tp)
    elif t == A.FLOATS:
        ap.floats.extend(v)
    elif t == A.INTS:
        ap.ints.extend(v)
    elif t == A.STRINGS:
        ap.strings.extend(_encode(s) for s in v)
    elif t == A.TENSORS:
        for x in v:
            _tensor(x, ap.tensors.add())
    elif t == A.GRAPHS:
        for x in v:
            _graph(x, ap.graphs.add())
    elif t == A.SPARSE_TENSORS:
        ap.sparse_tensors.extend(v)
    elif t == A.TYPE_PROTOS:
        for x in v:
            _type(x, ap.type_protos.add())


def _encode(s: str | bytes) -> bytes:
    return s if isinstance(s, bytes) else s.encode("utf-8")


def _function(f: Function, fp: onnx.FunctionProto) -> None:
    fp.name = f.name
    fp.domain = f.domain
    if f.overload:
        fp.overload = f.overload
    fp.input.extend(v.name for v in f.graph.inputs)
    fp.output.extend(v.name for v in f.graph.outputs)
    fp.attribute.extend(f.attributes)
    for a in f.attribute_defaults.values():
        _attribute(a, fp.attribute_proto.add())
    for domain, version in f.opset_imports.items():
        op = fp.opset_import.add()
        op.domain, op.version = domain, version
    _set(fp, doc_string=f.doc_string)
    _props(fp.metadata_props, f.metadata_props)
    body = onnx.GraphProto()
    _graph(f.graph, body)
    fp.node.extend(body.node)
    # A FunctionProto has no typed interface: input and output types live in value_info.
    for v in [*f.graph.inputs, *f.graph.outputs]:
        if _has_info(v):
            _value_info(v, fp.value_info.add())
    fp.value_info.extend(body.value_info)
