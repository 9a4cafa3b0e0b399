"""IR text (as `edgec.ir.printer` writes it) -> `Model` or `Graph`.

The LALR parser is built once from ``ir.lark`` and cached; a stateless Transformer
turns the parse into small syntax records that keep their tokens, and a builder
then makes the IR through the public mutation API (so use-def links are right),
resolving value names through nested scopes: a subgraph may read values of the
graphs around it, and a node may read a value defined further down (the verifier,
not the parser, says whether the order is valid).

Elided tensors (``dense<elided sha256:…>``) are a parse error: the text lost their
data. Print with ``elide_above=None`` to get text that reads back exactly.
"""

from __future__ import annotations

import codecs
import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from lark import Lark, Token, Transformer
from lark.exceptions import (UnexpectedCharacters, UnexpectedEOF, UnexpectedInput,
                             UnexpectedToken, VisitError)
from onnx import numpy_helper

from edgec.diagnostics import Diagnostic, EdgecError, ExitCode, Location
from edgec.ir.core import Attr, Function, Graph, Model, NameScope, Node, Tensor, Value
from edgec.ir.printer import ATTR_TYPE_NAMES, parse_float_elements
from edgec.ir.types import (DataType, MapType, OpaqueType, OptionalType, SequenceType, Shape,
                            SparseTensorType, TensorType, Type)

A = onnx.AttributeProto
GRAMMAR_PATH = Path(__file__).with_name("ir.lark")
_ATTR_TYPES = {name: t for t, name in ATTR_TYPE_NAMES.items()}


class IRSyntaxError(EdgecError):
    """IR text that does not parse or does not make sense; ``diagnostic`` has the
    line, column and the offending line for a caret."""

    exit_code = ExitCode.MODEL

    def __init__(self, diagnostic: Diagnostic):
        self.diagnostic = diagnostic
        super().__init__(diagnostic)

    def __str__(self) -> str:
        return self.diagnostic.render()


def parse_model(text: str, *, path: str = "<ir>") -> Model:
    """Read a model written by `edgec.ir.printer.print_model`."""
    return _parse(text, path, "model_file")


def parse_graph(text: str, *, path: str = "<ir>") -> Graph:
    """Read one graph written by `edgec.ir.printer.print_graph`."""
    return _parse(text, path, "graph_file")


@functools.cache
def _lark() -> Lark:
    return Lark(GRAMMAR_PATH.read_text(encoding="utf-8"), parser="lalr", lexer="contextual",
                propagate_positions=True, start=["model_file", "graph_file"],
                transformer=_ToSyntax(), maybe_placeholders=False)


def _parse(text: str, path: str, start: str):
    source = _Source(path, text)
    try:
        tree = _lark().parse(text, start=start)
    except UnexpectedInput as e:
        raise IRSyntaxError(source.syntax_error(e)) from None
    except VisitError as e:  # pragma: no cover - inline transformers raise directly
        if isinstance(e.orig_exc, _Problem):
            raise IRSyntaxError(source.at(e.orig_exc.message, e.orig_exc.token)) from None
        raise
    except _Problem as e:
        raise IRSyntaxError(source.at(e.message, e.token)) from None
    builder = _Builder(source)
    if start == "model_file":
        return builder.model(tree)
    return builder.graph(tree, NameScope(None))


# --------------------------------------------------------------------------- errors


class _Problem(Exception):
    """A semantic error at a token, turned into an IRSyntaxError with the source."""

    def __init__(self, message: str, token: Token | None):
        super().__init__(message)
        self.message = message
        self.token = token


@dataclass
class _Source:
    path: str
    text: str

    @functools.cached_property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    def diagnostic(self, message: str, line: int, column: int, length: int = 1,
                   notes: tuple[str, ...] = ()) -> Diagnostic:
        source_line = self.lines[line - 1] if 1 <= line <= len(self.lines) else None
        if source_line is not None:
            column = max(1, min(column, len(source_line) + 1))
            length = max(1, min(length, len(source_line) - column + 1))
        return Diagnostic.error(message, Location(self.path, line, column, length), notes,
                                code="ir.syntax", source_line=source_line)

    def at(self, message: str, token: Token | None) -> Diagnostic:
        if token is None or token.line is None:
            return Diagnostic.error(message, Location(self.path), code="ir.syntax")
        return self.diagnostic(message, token.line, token.column, len(str(token)))

    def syntax_error(self, e: UnexpectedInput) -> Diagnostic:
        line, column = getattr(e, "line", 1) or 1, getattr(e, "column", 1) or 1
        if isinstance(e, UnexpectedToken) and e.token.type != "$END":
            expected = _describe_expected(e.accepts or e.expected)
            return self.diagnostic(f"unexpected {_describe_token(e.token)}; expected {expected}",
                                   line, column, len(str(e.token)))
        if isinstance(e, (UnexpectedEOF, UnexpectedToken)):
            expected = _describe_expected(getattr(e, "accepts", None) or e.expected)
            last = max(1, len(self.lines))
            return self.diagnostic(f"unexpected end of input; expected {expected}", last,
                                   len(self.lines[last - 1]) + 1)
        if isinstance(e, UnexpectedCharacters):
            char = self.text[e.pos_in_stream] if e.pos_in_stream < len(self.text) else ""
            return self.diagnostic(f"unexpected character {char!r}", line, column)
        return self.diagnostic(str(e).splitlines()[0], line, column)  # pragma: no cover


_TERMINAL_WORDS = {
    "VALUE": "a value (%name)", "NAME": "a name", "STRING": "a string", "BYTES": "a string",
    "INT": "an integer", "FLOAT": "a float", "DENSE": "a tensor (dense<[...]>)",
    "REF": "an attribute reference ($name)", "UNKNOWN": "'?'", "$END": "end of input",
}


def _describe_token(token: Token) -> str:
    if token.type in ("VALUE", "NAME", "STRING", "INT", "FLOAT"):
        return f"{_TERMINAL_WORDS[token.type]} {token.value!r}"
    return repr(token.value)


def _describe_expected(names) -> str:
    words = set()
    terminals = {t.name: t for t in _lark().terminals}
    for name in names:
        if name in _TERMINAL_WORDS:
            words.add(_TERMINAL_WORDS[name])
        elif name in terminals and terminals[name].pattern.type == "str":
            words.add(repr(terminals[name].pattern.value))
        else:
            words.add(name)
    ordered = sorted(words)
    return ", ".join(ordered[:8]) + (", ..." if len(ordered) > 8 else "")


# --------------------------------------------------------------------------- syntax records


@dataclass
class _Info:
    items: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.items.get("name", "")

    @property
    def doc(self) -> str:
        return self.items.get("doc", "")

    @property
    def meta(self) -> dict[str, str]:
        return self.items.get("meta", {})


_NO_INFO = _Info()


@dataclass
class _Def:  # a value definition: graph input, node result, initializer name
    token: Token
    name: str
    type: Type | None
    info: _Info


@dataclass
class _Dense:
    token: Token
    type: TensorType | None
    info: _Info
    strings: list | None = None  # for dense_strings


@dataclass
class _Sparse:
    token: Token
    values: _Dense
    indices: _Dense
    type: TensorType


@dataclass
class _GraphSyntax:
    token: Token
    name: str
    params: list[_Def]
    outputs: list[tuple[Token, str, Type | None]]
    info: _Info
    stmts: list


@dataclass
class _Init:
    value: _Def
    tensor: Any


@dataclass
class _Op:
    token: Token
    domain: str
    op_type: str
    overload: str


@dataclass
class _AttrSyntax:
    token: Token
    name: str
    type_token: Token | None
    value: tuple  # (kind, payload, token)
    doc: str


@dataclass
class _NodeSyntax:
    name: str
    results: list[_Def | None]
    op: _Op
    operands: list[tuple[Token, str] | None]
    attrs: list[_AttrSyntax]
    info: _Info


@dataclass
class _FunctionSyntax:
    op: _Op
    params: list[_Def]
    outputs: list
    attributes: list[str]
    defaults: list[_AttrSyntax]
    opsets: dict
    info: _Info
    stmts: list


def _text(token: Token) -> str | bytes:
    """The value of a NAME, STRING or BYTES token."""
    if token.type == "STRING":
        return json.loads(token.value)
    if token.type == "BYTES":
        return codecs.escape_decode(token.value[2:-1].encode("ascii", "backslashreplace"))[0]
    return token.value


def _value_name(token: Token) -> str:
    body = token.value[1:]
    return json.loads(body) if body.startswith('"') else body


class _Typed:
    """Marker for a child that is a `Type` (types are frozen dataclasses)."""

    __slots__ = ("type",)

    def __init__(self, t):
        self.type = t


class _ToSyntax(Transformer):
    """Parse events -> syntax records; stateless, so one instance serves every parse."""

    # -- small pieces
    def dict(self, items):
        return ("dict", dict(items))

    def dict_item(self, items):
        key, value = items
        return (_text(key), int(value) if value.type == "INT" else _text(value))

    def info(self, items):
        return _Info(dict(items))

    def info_item(self, items):
        key, value = items
        if key.value not in ("name", "doc", "meta"):
            raise _Problem(f"unknown info key '{key.value}' (expected name, doc or meta)", key)
        if key.value == "meta":
            if not isinstance(value, tuple):
                raise _Problem("meta takes a dictionary of strings", key)
            return ("meta", value[1])
        if isinstance(value, tuple):
            raise _Problem(f"{key.value} takes a string", key)
        return (key.value, _text(value))

    def props(self, items):
        return list(items)

    def prop(self, items):
        key, value = items
        if isinstance(value, tuple):
            return (key, value[1])
        return (key, int(value) if value.type == "INT" else _text(value))

    # -- types
    def t_tensor(self, items):
        return _Typed(TensorType(_dtype(items[0]), items[1] if len(items) > 1 else None))

    def t_sparse(self, items):
        return _Typed(SparseTensorType(_dtype(items[0]), items[1] if len(items) > 1 else None))

    def t_seq(self, items):
        return _Typed(SequenceType(items[0]))

    def t_opt(self, items):
        return _Typed(OptionalType(items[0]))

    def t_map(self, items):
        return _Typed(MapType(_dtype(items[0]), items[1]))

    def t_opaque(self, items):
        return _Typed(OpaqueType(_text(items[0]), _text(items[1])))

    def elem_type(self, items):
        (item,) = items
        return item.type if isinstance(item, _Typed) else None

    def unranked(self, items):
        return Shape(None)

    def ranked(self, items):
        dims = tuple(d for d, _ in items)
        denotations = tuple(n for _, n in items)
        return Shape(dims, denotations if any(denotations) else ())

    def dim(self, items):
        tok = items[0]
        if tok.type == "INT":
            d = int(tok)
        elif tok.type == "UNKNOWN":
            d = None
        else:
            d = _text(tok)
        return (d, _text(items[1]) if len(items) > 1 else "")

    # -- tensors
    def dense(self, items):
        tok, t, info = _split_tensor_items(items)
        return _Dense(tok, t, info)

    def dense_strings(self, items):
        strings = [_text(x) for x in items if isinstance(x, Token)]
        rest = [x for x in items if not isinstance(x, Token)]
        _, t, info = _split_tensor_items([None, *rest])
        token = items[0] if items and isinstance(items[0], Token) else None
        return _Dense(token, t, info, strings=strings)

    def sparse(self, items):
        values, indices, t = items
        if not isinstance(t.type, TensorType):
            raise _Problem("a sparse tensor's type must be a tensor type", values.token)
        return _Sparse(values.token, values, indices, t.type)

    # -- attributes
    def a_int(self, items):
        return ("int", int(items[0]), items[0])

    def a_float(self, items):
        return ("float", float(np.float32(float(items[0]))), items[0])

    def a_string(self, items):
        return ("string", _text(items[0]), items[0])

    def a_type(self, items):
        return ("type", items[0].type, None)

    def a_ref(self, items):
        body = items[0].value[1:]
        return ("ref", json.loads(body) if body.startswith('"') else body, items[0])

    def a_list(self, items):
        return ("list", [_wrap_value(x) for x in items], None)

    def attr_type(self, items):
        return ("attr_type", items[0])

    def attr_doc(self, items):
        return ("attr_doc", _text(items[0]))

    def attr(self, items):
        name = items[0]
        type_token = None
        doc = ""
        value = None
        for x in items[1:]:
            if isinstance(x, tuple) and x[0] == "attr_type":
                type_token = x[1]
            elif isinstance(x, tuple) and x[0] == "attr_doc":
                doc = x[1]
            else:
                value = _wrap_value(x)
        return _AttrSyntax(name, _text(name), type_token, value, doc)

    def attrs(self, items):
        return list(items)

    # -- nodes
    def op_domain(self, items):
        return ("domain", items[0])

    def op_overload(self, items):
        return ("overload", items[0])

    def op(self, items):
        domain, overload, op_token = "", "", None
        for x in items:
            if isinstance(x, tuple):
                if x[0] == "domain":
                    domain = _text(x[1])
                    op_token = op_token or x[1]
                else:
                    overload = _text(x[1])
            else:
                op_type = _text(x)
                op_token = op_token or x
        return _Op(op_token, domain, op_type, overload)

    def node_name(self, items):
        return ("node_name", _text(items[0]))

    def result_value(self, items):
        return _definition(items)

    def result_omitted(self, items):
        return None

    def results(self, items):
        return ("results", list(items))

    def operand_value(self, items):
        return (items[0], _value_name(items[0]))

    def operand_omitted(self, items):
        return None

    def node(self, items):
        name, results, attrs, info = "", [], [], _NO_INFO
        op = None
        operands = []
        for x in items:
            if isinstance(x, tuple) and x and x[0] == "node_name":
                name = x[1]
            elif isinstance(x, tuple) and x and x[0] == "results":
                results = x[1]
            elif isinstance(x, _Op):
                op = x
            elif isinstance(x, list):
                attrs = x
            elif isinstance(x, _Info):
                info = x
            else:
                operands.append(x)
        return _NodeSyntax(name, results, op, operands, attrs, info)

    def init(self, items):
        tensor = items[-1]
        return _Init(_definition(items[:-1]), tensor)

    # -- graphs and functions
    def param(self, items):
        return _definition(items)

    def graph_output(self, items):
        return (items[0], _value_name(items[0]), items[1].type if len(items) > 1 else None)

    def graph(self, items):
        name = items[0]
        params, outputs, stmts, info = [], [], [], _NO_INFO
        for x in items[1:]:
            if isinstance(x, _Def):
                params.append(x)
            elif isinstance(x, tuple):
                outputs.append(x)
            elif isinstance(x, _Info):
                info = x
            else:
                stmts.append(x)
        return _GraphSyntax(name, _text(name), params, outputs, info, stmts)

    def function_attributes(self, items):
        return ("attributes", [_text(x) for x in items])

    def function_defaults(self, items):
        return ("defaults", items[0])

    def function_opsets(self, items):
        return ("opsets", items[0][1])

    def function(self, items):
        op = items[0]
        f = _FunctionSyntax(op, [], [], [], [], {}, _NO_INFO, [])
        for x in items[1:]:
            if isinstance(x, _Def):
                f.params.append(x)
            elif isinstance(x, tuple) and x[0] == "attributes":
                f.attributes = x[1]
            elif isinstance(x, tuple) and x[0] == "defaults":
                f.defaults = x[1]
            elif isinstance(x, tuple) and x[0] == "opsets":
                f.opsets = x[1]
            elif isinstance(x, tuple):
                f.outputs.append(x)
            elif isinstance(x, _Info):
                f.info = x
            else:
                f.stmts.append(x)
        return f

    def model(self, items):
        token = None
        props = items[0]
        info = _NO_INFO
        functions = []
        graph = None
        for x in items[1:]:
            if isinstance(x, _Info):
                info = x
            elif isinstance(x, _GraphSyntax):
                graph = x
            else:
                functions.append(x)
        return ("model", props, info, graph, functions, token)

    def model_file(self, items):
        return items[0]

    def graph_file(self, items):
        return items[0]


def _wrap_value(x):
    if isinstance(x, tuple):
        return x
    if isinstance(x, (_Dense, _Sparse)):
        return ("tensor", x, x.token)
    if isinstance(x, _GraphSyntax):
        return ("graph", x, x.token)
    raise AssertionError(f"unexpected attribute value {x!r}")  # pragma: no cover


def _definition(items) -> _Def:
    tok = items[0]
    t, info = None, _NO_INFO
    for x in items[1:]:
        if isinstance(x, _Typed):
            t = x.type
        elif isinstance(x, _Info):
            info = x
    return _Def(tok, _value_name(tok), t, info)


def _split_tensor_items(items):
    tok = items[0]
    t, info = None, _NO_INFO
    for x in items[1:]:
        if isinstance(x, _Typed):
            t = x.type
            if not isinstance(t, TensorType):
                raise _Problem(f"a tensor literal's type must be a tensor type, not {t}", tok)
        elif isinstance(x, _Info):
            info = x
    return tok, t, info


def _dtype(token: Token) -> DataType:
    try:
        return DataType.from_short_name(token.value)
    except KeyError:
        raise _Problem(f"unknown element type '{token.value}' (expected f32, i64, bool, ...)",
                       token) from None


# --------------------------------------------------------------------------- building the IR


class _Builder:
    def __init__(self, source: _Source):
        self.source = source

    def fail(self, message: str, token: Token | None):
        raise IRSyntaxError(self.source.at(message, token))

    # -- model
    def model(self, syntax) -> Model:
        _, props, info, graph_syntax, functions, _ = syntax
        fields: dict[str, Any] = {}
        known = {"ir_version": int, "opset_import": dict, "producer_name": str,
                 "producer_version": str, "domain": str, "model_version": int}
        for key, value in props:
            want = known.get(key.value)
            if want is None:
                self.fail(f"unknown model property '{key.value}' (expected one of "
                          f"{', '.join(known)})", key)
            if not isinstance(value, want):
                self.fail(f"model property '{key.value}' takes {want.__name__}", key)
            fields[key.value] = value
        opsets = fields.pop("opset_import", {})
        model = Model(graph=self.graph(graph_syntax, NameScope(None)),
                      opset_imports=opsets, doc_string=info.doc,
                      metadata_props=dict(info.meta), **fields)
        for fs in functions:
            f = self.function(fs)
            if f.identifier in model.functions:
                self.fail(f"function '{f.domain}::{f.name}' is defined twice", fs.op.token)
            model.functions[f.identifier] = f
        return model

    def function(self, fs: _FunctionSyntax) -> Function:
        scope = NameScope(None)
        graph = Graph(fs.op.op_type)
        self.populate(graph, fs.params, fs.outputs, fs.stmts, scope)
        return Function(domain=fs.op.domain, name=fs.op.op_type, graph=graph,
                        overload=fs.op.overload, attributes=list(fs.attributes),
                        attribute_defaults={a.name: self.attr(a, scope) for a in fs.defaults},
                        opset_imports=dict(fs.opsets), doc_string=fs.info.doc,
                        metadata_props=dict(fs.info.meta))

    # -- graphs
    def graph(self, gs: _GraphSyntax, parent: NameScope) -> Graph:
        graph = Graph(gs.name, doc_string=gs.info.doc, metadata_props=dict(gs.info.meta))
        self.populate(graph, gs.params, gs.outputs, gs.stmts, NameScope(parent))
        return graph

    def define(self, scope: NameScope, d: _Def) -> Value:
        if d.name in scope.values:
            self.fail(f"value '%{d.name}' is defined twice in this graph", d.token)
        v = Value(d.name, d.type, doc_string=d.info.doc, metadata_props=dict(d.info.meta))
        scope.values[d.name] = v
        return v

    def populate(self, graph: Graph, params, outputs, stmts, scope: NameScope) -> None:
        inputs: dict[str, Value] = {}
        for p in params:
            v = self.define(scope, p)
            graph.add_input(v)
            inputs[p.name] = v
        # Every definition first, so that reads of values defined further down (and by
        # subgraphs, of values of this graph) resolve.
        pending: list[tuple[_NodeSyntax, list[Value]]] = []
        for st in stmts:
            if isinstance(st, _Init):
                d = st.value
                v = inputs.get(d.name)
                if v is None or v.const is not None:
                    v = self.define(scope, d)
                v.const = self.tensor(st.tensor, v.type, with_name=False)
                v.const.name = d.name
                graph.add_initializer(v)
            else:
                outs = [Value("") if r is None else self.define(scope, r) for r in st.results]
                pending.append((st, outs))
        for st, outs in pending:
            inputs_ = []
            for operand in st.operands:
                if operand is None:
                    inputs_.append(None)
                    continue
                token, name = operand
                v = scope.lookup(name)
                if v is None:
                    self.fail(f"value '%{name}' is not defined in this graph or an enclosing "
                              "one", token)
                inputs_.append(v)
            node = Node(st.op.op_type, inputs_, domain=st.op.domain, name=st.name,
                        overload=st.op.overload, outputs=outs, doc_string=st.info.doc,
                        metadata_props=dict(st.info.meta))
            for a in st.attrs:
                if a.name in node.attributes:
                    self.fail(f"attribute '{a.name}' is given twice", a.token)
                node.set_attr(a.name, self.attr(a, scope))
            graph.append(node)
        for token, name, t in outputs:
            v = scope.lookup(name)
            if v is None:
                self.fail(f"graph output '%{name}' is not defined in this graph or an "
                          "enclosing one", token)
            if t is not None:
                v.type = t
            graph.outputs.append(v)

    # -- attributes
    def attr(self, a: _AttrSyntax, scope: NameScope) -> Attr:
        declared = None
        if a.type_token is not None:
            declared = _ATTR_TYPES.get(a.type_token.value)
            if declared is None:
                self.fail(f"unknown attribute type '{a.type_token.value}' (expected one of "
                          f"{', '.join(sorted(_ATTR_TYPES))})", a.type_token)
        kind, payload, token = a.value
        if kind == "ref":
            if declared is None:
                self.fail(f"the reference ${payload} needs a type: {a.name}: float = "
                          f"${payload}", token or a.token)
            return Attr(a.name, declared, None, ref_attr_name=payload, doc_string=a.doc)
        t, value = self.attr_value(a, kind, payload, token, declared, scope)
        return Attr(a.name, t, value, doc_string=a.doc)

    def attr_value(self, a: _AttrSyntax, kind: str, payload, token, declared, scope):
        if kind == "list":
            items = [self.attr_value(a, k, p, tok, _element_type(declared), scope)
                     for k, p, tok in payload]
            if declared is None:
                if not items:
                    self.fail(f"the empty list of attribute '{a.name}' needs a type, e.g. "
                              f"{a.name}: ints = []", a.token)
                kinds = {t for t, _ in items}
                if kinds == {A.INT, A.FLOAT}:
                    kinds = {A.FLOAT}
                kind_of_items = next(iter(kinds))
                if len(kinds) != 1 or kind_of_items not in _LIST_OF:
                    self.fail(f"attribute '{a.name}' mixes values of different kinds", a.token)
                declared = _LIST_OF[kind_of_items]
            values = [v for _, v in items]
            if declared == A.FLOATS:
                values = [float(v) for v in values]
            return declared, values
        if kind == "int":
            if declared == A.FLOAT:
                return A.FLOAT, float(np.float32(payload))
            return declared or A.INT, payload
        if kind == "float":
            return declared or A.FLOAT, payload
        if kind == "string":
            return declared or A.STRING, payload
        if kind == "type":
            return declared or A.TYPE_PROTO, payload
        if kind == "graph":
            return declared or A.GRAPH, self.graph(payload, scope)
        if kind == "tensor":
            if isinstance(payload, _Sparse):
                return declared or A.SPARSE_TENSOR, self.sparse_proto(payload)
            return declared or A.TENSOR, self.tensor(payload, None)
        raise AssertionError(kind)  # pragma: no cover

    # -- tensors
    def tensor(self, syntax, implied: Type | None, *, with_name: bool = True) -> Tensor:
        if isinstance(syntax, _Sparse):
            sp = self.sparse_proto(syntax)
            t = Tensor(name=sp.values.name, dtype=syntax.type.dtype,
                       dims=tuple(syntax.type.shape.dims))
            t.sparse_proto = sp
            return t
        array, dtype = self.dense_array(syntax, implied)
        t = Tensor(array, dtype=dtype, name=syntax.info.name if with_name else "",
                   doc_string=syntax.info.doc, metadata_props=dict(syntax.info.meta))
        return t

    def sparse_proto(self, syntax: _Sparse) -> onnx.SparseTensorProto:
        shape = syntax.type.shape
        if shape is None or not shape.is_static:
            self.fail("a sparse tensor needs static dims, e.g. f32[10,10]", syntax.token)
        sp = onnx.SparseTensorProto()
        for part, target in ((syntax.values, sp.values), (syntax.indices, sp.indices)):
            t = self.tensor(part, None)
            target.CopyFrom(numpy_helper.from_array(t.numpy()))
            target.data_type = int(t.dtype)
            if t.name:
                target.name = t.name
            if t.doc_string:
                target.doc_string = t.doc_string
            for k, v in t.metadata_props.items():
                e = target.metadata_props.add()
                e.key, e.value = k, v
        sp.dims.extend(shape.dims)
        return sp

    def dense_array(self, syntax: _Dense, implied: Type | None):
        t = syntax.type or implied
        token = syntax.token
        if not isinstance(t, TensorType) or t.shape is None or not t.shape.is_static:
            self.fail("a tensor literal needs a static tensor type, e.g. "
                      "dense<[1.0, 2.0]> : f32[2]", token)
        dims = tuple(t.shape.dims)
        count = math.prod(dims)
        dtype = t.dtype
        if syntax.strings is not None:
            if dtype is not DataType.STRING:
                self.fail(f"dense_strings holds strings, but its type says {dtype.short_name}",
                          token)
            items = syntax.strings
            if len(items) != count:
                self.fail(f"the tensor has {len(items)} elements but its type "
                          f"{dtype.short_name}{list(dims)} needs {count}", token)
            array = np.empty(len(items), dtype=object)
            array[:] = items
            return array.reshape(dims), dtype
        content = token.value[len("dense<"):-1].strip()
        if content.startswith("elided"):
            self.fail("this tensor's data was elided when the IR was printed; print it with "
                      "elide_above=None to get text that parses", token)
        if not (content.startswith("[") and content.endswith("]")):
            self.fail("expected tensor data as a flat list, e.g. dense<[1.0, 2.0]>", token)
        inner = content[1:-1].strip()
        items = [x.strip() for x in inner.split(",")] if inner else []
        if len(items) != count:
            self.fail(f"the tensor has {len(items)} elements but its type "
                      f"{dtype.short_name}{list(dims)} needs {count}", token)
        if dtype in (DataType.STRING, DataType.UNDEFINED):
            self.fail(f"dense<...> cannot hold {dtype.short_name} elements", token)
        try:
            array = _elements(items, dtype)
        except (ValueError, OverflowError) as e:
            self.fail(f"bad element in {dtype.short_name} tensor data: {e}", token)
        return array.reshape(dims), dtype


_LIST_OF = {A.INT: A.INTS, A.FLOAT: A.FLOATS, A.STRING: A.STRINGS, A.TENSOR: A.TENSORS,
            A.SPARSE_TENSOR: A.SPARSE_TENSORS, A.GRAPH: A.GRAPHS, A.TYPE_PROTO: A.TYPE_PROTOS}
_ELEMENT_OF = {v: k for k, v in _LIST_OF.items()}


def _element_type(declared: int | None) -> int | None:
    return None if declared is None else _ELEMENT_OF.get(declared)


def _elements(items: list[str], dtype: DataType) -> np.ndarray:
    np_dtype = dtype.to_numpy()
    if dtype is DataType.BOOL:
        words = {"true": True, "false": False, "1": True, "0": False}
        try:
            return np.array([words[x] for x in items], dtype=np.bool_)
        except KeyError as e:
            raise ValueError(f"{e.args[0]!r} is not true or false") from None
    if dtype in (DataType.COMPLEX64, DataType.COMPLEX128):
        return np.array([complex(x) for x in items], dtype=np.complex128).astype(np_dtype)
    if dtype.is_floating:
        return parse_float_elements(items, np.dtype(np_dtype))
    wide = np.uint64 if dtype is DataType.UINT64 else np.int64
    return np.array([int(x) for x in items], dtype=wide).astype(np_dtype)
