"""The IR's text form: a stable, MLIR-flavoured listing of a model or graph.

Tests write IR as text, ``edgec opt --print-after`` shows it and crash reproducers
record it; `edgec.ir.parser` reads back exactly what is written here. The output
depends only on the IR (never on object ids), and with ``elide_above=None`` it holds
every tensor in full precision, so ``parse(print(m))`` prints identically::

    model {ir_version = 8, opset_import = {"": 17}} {
      graph @main(%x: f32[N,3]) -> (%y: f32[N,3]) {
        init %w: f32[3] = dense<[1.0, 2.0, 3.0]>
        "add0": %y: f32[N,3] = Add(%x, %w)
      }
    }
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import numpy as np
import onnx

from edgec.ir.core import Attr, Function, Graph, Model, Node, Tensor, Value
from edgec.ir.types import (DataType, MapType, OpaqueType, OptionalType, SequenceType, Shape,
                            SparseTensorType, TensorType, Type)

A = onnx.AttributeProto
INDENT = "  "

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")
_VALUE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-/]*\Z")
_DIM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Words the grammar reserves somewhere: identifiers spelled like them are quoted.
KEYWORDS = frozenset({
    "model", "graph", "func", "init", "attributes", "defaults", "opset_import", "doc",
    "type", "sparse", "seq", "opt", "map", "opaque", "dense", "dense_strings", "inf",
    "nan", "true", "false", "_",
})

# AttributeProto type <-> the annotation written as ``name: ints = []``.
ATTR_TYPE_NAMES = {t: A.AttributeType.Name(t).lower() for t in A.AttributeType.values()}


def print_model(model: Model, *, elide_above: int | None = 16) -> str:
    """The text form of ``model``. Tensors with more than ``elide_above`` elements
    are shown as a digest (``dense<elided sha256:…>``); ``None`` prints them all."""
    return _Printer(elide_above).model(model)


def print_graph(graph: Graph, *, elide_above: int | None = 16) -> str:
    """The text form of one graph (``graph @name(...) -> (...) {...}``)."""
    p = _Printer(elide_above)
    p.graph(graph, 0)
    return "\n".join(p.lines) + "\n"


def format_type(t: Type | None) -> str:
    """A type as the text form writes it: ``f32[N,3]``, ``seq<i64[?]>``, ``f32[*]``."""
    if t is None:
        return "?"
    if isinstance(t, TensorType):
        return t.dtype.short_name + ("" if t.shape is None else format_shape(t.shape))
    if isinstance(t, SparseTensorType):
        shape = "" if t.shape is None else format_shape(t.shape)
        return f"sparse<{t.dtype.short_name}{shape}>"
    if isinstance(t, SequenceType):
        return f"seq<{format_type(t.elem)}>"
    if isinstance(t, OptionalType):
        return f"opt<{format_type(t.elem)}>"
    if isinstance(t, MapType):
        return f"map<{t.key.short_name},{format_type(t.value)}>"
    if isinstance(t, OpaqueType):
        return f"opaque<{quote(t.domain)},{quote(t.name)}>"
    raise TypeError(f"unknown IR type {t!r}")


def format_shape(shape: Shape) -> str:
    if shape.dims is None:
        return "[*]"
    parts = []
    for i, d in enumerate(shape.dims):
        if d is None:
            text = "?"
        elif isinstance(d, int):
            text = str(d)
        elif _DIM_NAME.match(d) and d not in KEYWORDS:
            text = d
        else:
            text = quote(d)
        if shape.denotations and shape.denotations[i]:
            text += "@" + quote(shape.denotations[i])
        parts.append(text)
    return "[" + ",".join(parts) + "]"


def quote(s: str | bytes) -> str:
    """A string literal: JSON-style for text, ``b"..."`` with ``\\xNN`` for raw bytes."""
    if isinstance(s, bytes):
        out = []
        for byte in s:
            ch = chr(byte)
            if ch in '"\\' or not 0x20 <= byte < 0x7f:
                out.append(f"\\x{byte:02x}")
            else:
                out.append(ch)
        return 'b"' + "".join(out) + '"'
    return json.dumps(s, ensure_ascii=False)


def ident(s: str) -> str:
    """A name of an op, domain, attribute or graph: bare when it can be, else quoted."""
    return s if _NAME.match(s) and s not in KEYWORDS else quote(s)


def value_ref(v: Value | None) -> str:
    if v is None:
        return "_"
    name = v.name or ""
    return "%" + (name if _VALUE_NAME.match(name) else quote(name))


def format_float(x: float) -> str:
    """A float32 attribute value, shortest text that reads back to the same float32."""
    text = str(np.float32(x))
    if text in ("inf", "-inf", "nan"):
        return text
    if not any(c in text for c in ".eE"):
        text += ".0"
    return text


def format_info(*, name: str = "", doc: str = "", meta: dict[str, str] | None = None) -> str:
    items = []
    if name:
        items.append(f"name = {quote(name)}")
    if doc:
        items.append(f"doc = {quote(doc)}")
    if meta:
        items.append(f"meta = {format_dict(meta)}")
    return " #{" + ", ".join(items) + "}" if items else ""


def format_dict(d: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{quote(k)}: {v if isinstance(v, int) else quote(v)}"
                           for k, v in d.items()) + "}"


# --------------------------------------------------------------------------- tensors

_IEEE = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _bits_view(arr: np.ndarray) -> np.ndarray:
    return arr.view(np.dtype(f"u{arr.dtype.itemsize}"))


def format_elements(arr: np.ndarray, dtype: DataType) -> list[str]:
    """Each element of ``arr`` (flattened) as text that parses back to the same bits.

    Floats are written in their shortest decimal form; the rare element that would
    not read back bit-exactly (a NaN with a payload or sign) is written as its bit
    pattern, ``0x7fc00001``.
    """
    flat = arr.reshape(-1)
    if dtype is DataType.BOOL:
        return ["true" if x else "false" for x in flat.tolist()]
    if dtype in (DataType.COMPLEX64, DataType.COMPLEX128):
        part = np.float32 if dtype is DataType.COMPLEX64 else np.float64
        out = []
        for z in flat.tolist():
            re_, im = format_float_element(part(z.real)), format_float_element(part(z.imag))
            out.append(f"({re_}{'' if im.startswith('-') else '+'}{im}j)")
        return out
    if not dtype.is_floating:
        return [str(x) for x in flat.astype(np.int64 if dtype is not DataType.UINT64
                                              else np.uint64).tolist()]
    if flat.dtype in _IEEE:
        texts = [format_float_element(x) for x in flat]
    else:  # bfloat16, float8, float4: exact as a double
        texts = [format_float_element(float(x)) for x in flat.astype(np.float64)]
    back = parse_float_elements(texts, flat.dtype)
    bad = np.nonzero(_bits_view(back) != _bits_view(flat))[0]
    for i in bad.tolist():
        texts[i] = "0x" + format(int(_bits_view(flat[i:i + 1])[0]), "x")
    return texts


def format_float_element(x) -> str:
    text = str(x)
    if text in ("inf", "-inf", "nan"):
        return text
    if not any(c in text for c in ".eEn"):
        text += ".0"
    return text


def parse_float_elements(texts: list[str], np_dtype: np.dtype) -> np.ndarray:
    """The inverse of `format_elements` for floats (also used by the parser)."""
    bits = [i for i, t in enumerate(texts) if t.startswith(("0x", "-0x"))]
    values = np.array([0.0 if t.startswith(("0x", "-0x")) else float(t) for t in texts],
                      dtype=np.float64)
    out = values.astype(np_dtype)
    if bits:
        view = _bits_view(out)
        for i in bits:
            view[i] = int(texts[i], 16)
    return out


def tensor_digest(t: Tensor) -> str:
    h = hashlib.sha256()
    h.update(f"{int(t.dtype)}:{list(t.dims)}:".encode())
    if t.dtype is DataType.STRING:
        for s in string_elements(t):
            h.update(len(s).to_bytes(8, "little") + s)
    else:
        h.update(np.ascontiguousarray(t.numpy()).tobytes())
    return h.hexdigest()[:16]


def string_elements(t: Tensor) -> list[bytes]:
    if t.proto is not None and t.external is None and not t.is_loaded:
        return list(t.proto.string_data)
    return [s if isinstance(s, bytes) else str(s).encode("utf-8") for s in t.numpy().flat]


class _Printer:
    def __init__(self, elide_above: int | None):
        self.elide_above = elide_above
        self.lines: list[str] = []

    def emit(self, depth: int, text: str) -> None:
        self.lines.append(INDENT * depth + text)

    # -- model
    def model(self, m: Model) -> str:
        props = [f"ir_version = {m.ir_version}",
                 f"opset_import = {format_dict(m.opset_imports)}"]
        for key in ("producer_name", "producer_version", "domain"):
            if getattr(m, key):
                props.append(f"{key} = {quote(getattr(m, key))}")
        if m.model_version:
            props.append(f"model_version = {m.model_version}")
        info = format_info(doc=m.doc_string, meta=m.metadata_props)
        self.emit(0, "model {" + ", ".join(props) + "}" + info + " {")
        self.graph(m.graph, 1)
        for f in m.functions.values():
            self.function(f, 1)
        self.emit(0, "}")
        return "\n".join(self.lines) + "\n"

    def function(self, f: Function, depth: int) -> None:
        head = "func " + self.op_name(f.domain, f.name, f.overload)
        head += self.signature(f.graph)
        if f.attributes:
            head += " attributes [" + ", ".join(ident(a) for a in f.attributes) + "]"
        if f.attribute_defaults:
            head += " defaults " + self.attrs_inline(list(f.attribute_defaults.values()))
        if f.opset_imports:
            head += " opset_import " + format_dict(f.opset_imports)
        head += format_info(doc=f.doc_string, meta=f.metadata_props)
        self.emit(depth, head + " {")
        self.body(f.graph, depth + 1)
        self.emit(depth, "}")

    # -- graphs
    def signature(self, g: Graph) -> str:
        params = ", ".join(self.definition(v) for v in g.inputs)
        outs = ", ".join(value_ref(v) + ("" if v.type is None else ": " + format_type(v.type))
                         for v in g.outputs)
        return f"({params}) -> ({outs})"

    def graph(self, g: Graph, depth: int, prefix: str = "", suffix: str = "") -> None:
        info = format_info(doc=g.doc_string, meta=g.metadata_props)
        self.emit(depth, f"{prefix}graph @{ident(g.name)}{self.signature(g)}{info} {{")
        self.body(g, depth + 1)
        self.emit(depth, "}" + suffix)

    def body(self, g: Graph, depth: int) -> None:
        inputs = {id(v) for v in g.inputs}
        for name, v in g.initializers.items():
            self.init(v, id(v) in inputs, depth)
        for node in g:
            self.node(node, depth)

    def definition(self, v: Value) -> str:
        text = value_ref(v)
        if v.type is not None:
            text += ": " + format_type(v.type)
        return text + format_info(doc=v.doc_string, meta=v.metadata_props)

    def init(self, v: Value, is_input: bool, depth: int) -> None:
        t = v.const
        assert t is not None
        if is_input:
            head = value_ref(v)  # typed in the signature
            implied = None
        else:
            head = self.definition(v)
            implied = v.type if t.sparse_proto is None else None
        self.emit(depth, f"init {head} = {self.tensor(t, implied=implied, with_name=False)}")

    def tensor(self, t: Tensor, *, implied: Type | None = None, with_name: bool = True) -> str:
        """``dense<[...]> : f32[2]``; the type is left out when ``implied`` (the type of
        the value it initializes) already says it."""
        if t.sparse_proto is not None:
            return self.sparse(t.sparse_proto)
        tensor_type = TensorType(t.dtype, Shape(tuple(t.dims)))
        if self.elide_above is not None and t.numel > self.elide_above:
            if t.external is not None and not t.is_loaded:
                body = "dense<elided external>"
            else:
                body = f"dense<elided sha256:{tensor_digest(t)}>"
        elif t.dtype is DataType.STRING:
            body = "dense_strings<[" + ", ".join(quote(_text_or_bytes(s))
                                                 for s in string_elements(t)) + "]>"
        else:
            body = "dense<[" + ", ".join(format_elements(t.numpy(), t.dtype)) + "]>"
        if implied != tensor_type:
            body += " : " + format_type(tensor_type)
        return body + format_info(name=t.name if with_name else "", doc=t.doc_string,
                                  meta=t.metadata_props)

    def sparse(self, sp: onnx.SparseTensorProto) -> str:
        values = self.tensor(Tensor.from_proto(sp.values))
        indices = self.tensor(Tensor.from_proto(sp.indices))
        dtype = DataType(sp.values.data_type)
        return f"sparse({values}, {indices}) : {format_type(TensorType(dtype, Shape(tuple(sp.dims))))}"

    # -- nodes
    @staticmethod
    def op_name(domain: str, op_type: str, overload: str) -> str:
        text = f"{ident(domain)}::{ident(op_type)}" if domain else ident(op_type)
        return text + (f"<{ident(overload)}>" if overload else "")

    def node(self, node: Node, depth: int) -> None:
        head = f"{quote(node.name)}: " if node.name else ""
        if node.outputs:
            head += ", ".join(self.definition(o) if o.name else "_" for o in node.outputs)
            head += " = "
        head += self.op_name(node.domain, node.op_type, node.overload)
        head += "(" + ", ".join(value_ref(v) for v in node.inputs) + ")"
        info = format_info(doc=node.doc_string, meta=node.metadata_props)
        attrs = list(node.attributes.values())
        if not any(a.subgraphs() for a in attrs):
            if attrs:
                head += " " + self.attrs_inline(attrs)
            self.emit(depth, head + info)
            return
        # Subgraphs are printed nested, one attribute per line.
        self.emit(depth, head + " {")
        for i, a in enumerate(attrs):
            comma = "," if i + 1 < len(attrs) else ""
            self.attr_block(a, depth + 1, comma)
        self.emit(depth, "}" + info)

    def attrs_inline(self, attrs: list[Attr]) -> str:
        return "{" + ", ".join(self.attr_head(a) + self.attr_text(a) + self.attr_doc(a)
                               for a in attrs) + "}"

    def attr_text(self, a: Attr) -> str:
        if a.ref_attr_name:
            name = a.ref_attr_name
            return "$" + (name if _NAME.match(name) else quote(name))
        return self.attr_value(a.type, a.value)

    def attr_block(self, a: Attr, depth: int, comma: str) -> None:
        head = self.attr_head(a)
        if a.ref_attr_name or a.type not in (A.GRAPH, A.GRAPHS):
            self.emit(depth, head + self.attr_text(a) + self.attr_doc(a) + comma)
        elif a.type == A.GRAPH:
            self.graph(a.value, depth, prefix=head, suffix=self.attr_doc(a) + comma)
        else:
            if not a.value:
                self.emit(depth, head + "[]" + self.attr_doc(a) + comma)
                return
            self.emit(depth, head + "[")
            for i, g in enumerate(a.value):
                self.graph(g, depth + 1, suffix="," if i + 1 < len(a.value) else "")
            self.emit(depth, "]" + self.attr_doc(a) + comma)

    def attr_head(self, a: Attr) -> str:
        annotate = bool(a.ref_attr_name) or inferred_attr_type(a.value) != a.type
        return ident(a.name) + (f": {ATTR_TYPE_NAMES.get(a.type, str(a.type))}"
                                if annotate else "") + " = "

    @staticmethod
    def attr_doc(a: Attr) -> str:
        return f" doc {quote(a.doc_string)}" if a.doc_string else ""

    def attr_value(self, t: int, v: Any) -> str:
        if t in (A.INTS, A.FLOATS, A.STRINGS, A.TENSORS, A.SPARSE_TENSORS, A.TYPE_PROTOS,
                 A.GRAPHS) and isinstance(v, (list, tuple)):
            item = {A.INTS: A.INT, A.FLOATS: A.FLOAT, A.STRINGS: A.STRING, A.TENSORS: A.TENSOR,
                    A.SPARSE_TENSORS: A.SPARSE_TENSOR, A.TYPE_PROTOS: A.TYPE_PROTO,
                    A.GRAPHS: A.GRAPH}[t]
            return "[" + ", ".join(self.attr_value(item, x) for x in v) + "]"
        if v is None:
            return "[]"
        if t == A.INT:
            return str(int(v))
        if t == A.FLOAT:
            return format_float(v)
        if t == A.STRING:
            return quote(v)
        if t == A.TENSOR:
            return self.tensor(v)
        if t == A.SPARSE_TENSOR:
            return self.sparse(v)
        if t == A.TYPE_PROTO:
            return f"type<{format_type(v)}>"
        if t == A.GRAPH:
            p = _Printer(self.elide_above)
            p.graph(v, 0)
            return "\n".join(p.lines)
        raise TypeError(f"cannot print an attribute of type {t} ({v!r})")


def _text_or_bytes(s: bytes) -> str | bytes:
    try:
        return s.decode("utf-8")
    except UnicodeDecodeError:
        return s


def inferred_attr_type(value: Any) -> int:
    """The attribute type the parser infers from how a value is written (without a
    ``: type`` annotation); the printer annotates whenever this would be wrong."""
    if isinstance(value, bool):
        return A.UNDEFINED
    if isinstance(value, int):
        return A.INT
    if isinstance(value, float):
        return A.FLOAT
    if isinstance(value, (str, bytes)):
        return A.STRING
    if isinstance(value, Tensor):
        return A.SPARSE_TENSOR if value.sparse_proto is not None else A.TENSOR
    if isinstance(value, onnx.SparseTensorProto):
        return A.SPARSE_TENSOR
    if isinstance(value, Graph):
        return A.GRAPH
    if isinstance(value, (TensorType, SparseTensorType, SequenceType, OptionalType, MapType,
                          OpaqueType)):
        return A.TYPE_PROTO
    if isinstance(value, (list, tuple)) and value:
        kinds = {inferred_attr_type(x) for x in value}
        if kinds == {A.FLOAT, A.INT} or kinds == {A.FLOAT}:
            return A.FLOATS if kinds == {A.FLOAT} else A.UNDEFINED
        if len(kinds) == 1:
            return {A.INT: A.INTS, A.STRING: A.STRINGS, A.TENSOR: A.TENSORS,
                    A.SPARSE_TENSOR: A.SPARSE_TENSORS, A.GRAPH: A.GRAPHS,
                    A.TYPE_PROTO: A.TYPE_PROTOS}.get(kinds.pop(), A.UNDEFINED)
    return A.UNDEFINED
