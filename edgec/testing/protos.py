"""Comparing ONNX protos in tests: canonical forms that ignore what does not change meaning.

ONNX is proto2, so a scalar field explicitly set to its default (``doc_string: ""``)
differs on the wire from one never set, while meaning the same. `canonical_proto`
clears such fields (recursively; members of a oneof are kept, since there setting
the default *is* meaningful: ``dim_param: ""`` is not an unknown dimension). With
``tensor_numerics`` every inline TensorProto is rewritten to one storage form
(``raw_data``), so tensors compare by their exact numerics, not by which field
holds them.
"""

from __future__ import annotations

import difflib

import numpy as np
import onnx
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from onnx import numpy_helper


def canonical_proto(message: Message, *, tensor_numerics: bool = False) -> Message:
    """A copy of ``message`` with default-valued scalar fields cleared, and with
    ``tensor_numerics``, tensors normalized to raw little-endian bytes."""
    out = type(message)()
    out.CopyFrom(message)
    _canonicalize(out, tensor_numerics)
    return out


def assert_protos_equal(actual: Message, expected: Message, *,
                        tensor_numerics: bool = False) -> None:
    """Assert two protos are equal in canonical form; the failure shows a text diff."""
    a = canonical_proto(actual, tensor_numerics=tensor_numerics)
    b = canonical_proto(expected, tensor_numerics=tensor_numerics)
    if a == b:
        return
    diff = difflib.unified_diff(str(b).splitlines(), str(a).splitlines(), "expected",
                                "actual", lineterm="", n=2)
    lines = list(diff)
    shown = "\n".join(lines[:80]) + ("\n..." if len(lines) > 80 else "")
    raise AssertionError(f"protos differ:\n{shown}")


def _canonicalize(message: Message, tensor_numerics: bool) -> None:
    if tensor_numerics and isinstance(message, onnx.TensorProto):
        _normalize_tensor(message)
    for fd, value in message.ListFields():
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            if _repeated(fd):
                for item in value:
                    _canonicalize(item, tensor_numerics)
            else:
                _canonicalize(value, tensor_numerics)
        elif (not _repeated(fd) and fd.containing_oneof is None
              and value == fd.default_value):
            message.ClearField(fd.name)


def _repeated(fd: FieldDescriptor) -> bool:
    # protobuf 5.x/6.x: is_repeated; older releases only have label.
    is_repeated = getattr(fd, "is_repeated", None)
    if is_repeated is not None:
        return bool(is_repeated)
    return fd.label == FieldDescriptor.LABEL_REPEATED


def _normalize_tensor(tp: onnx.TensorProto) -> None:
    if tp.data_location == onnx.TensorProto.EXTERNAL:
        return  # its bytes are elsewhere; compared by reference
    if tp.data_type == onnx.TensorProto.STRING:
        strings = list(tp.string_data)
        _clear_data(tp)
        tp.string_data.extend(strings)
        return
    array = numpy_helper.to_array(tp)
    _clear_data(tp)
    tp.raw_data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()


def _clear_data(tp: onnx.TensorProto) -> None:
    for name in ("float_data", "int32_data", "string_data", "int64_data", "double_data",
                 "uint64_data", "raw_data", "data_location"):
        tp.ClearField(name)
