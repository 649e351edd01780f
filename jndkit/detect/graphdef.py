"""Read a TensorFlow GraphDef (binary ``.pb`` or text ``.pbtxt``) with protobuf alone.

TensorFlow is not needed, and neither is TensorBoard: the few messages a frozen graph uses
(``GraphDef``, ``NodeDef``, ``AttrValue``, ``TensorProto``, ``TensorShapeProto``) are declared here
with protobuf's own descriptor API, with the field numbers of TensorFlow's public ``.proto`` files
(``tensorflow/core/framework/{graph,node_def,attr_value,tensor,tensor_shape}.proto``; checked
against ``tensorboard.compat.proto`` 2.21). Fields not declared (function library, versions, debug
info) are skipped by protobuf as unknown fields. Written by hand because the alternative,
``tensorboard.compat.proto.graph_pb2``, would add TensorBoard and its server dependencies
(grpcio, werkzeug, ...) to jndkit for five message types.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

_PACKAGE = "jndkit_tf"

# (message, [(field name, number, type, label, type_name)]); label 1 optional, 3 repeated.
_T_DOUBLE, _T_FLOAT, _T_INT64, _T_INT32, _T_BOOL, _T_STRING, _T_MSG, _T_BYTES, _T_ENUM = 1, 2, 3, 5, 8, 9, 11, 12, 14
_OPT, _REP = 1, 3
_MESSAGES: list[tuple[str, list[tuple[str, int, int, int, str]]]] = [
    ("TensorShapeProto.Dim", [("size", 1, _T_INT64, _OPT, ""), ("name", 2, _T_STRING, _OPT, "")]),
    ("TensorShapeProto", [("dim", 2, _T_MSG, _REP, "TensorShapeProto.Dim"), ("unknown_rank", 3, _T_BOOL, _OPT, "")]),
    ("TensorProto", [
        ("dtype", 1, _T_ENUM, _OPT, "DataType"), ("tensor_shape", 2, _T_MSG, _OPT, "TensorShapeProto"),
        ("version_number", 3, _T_INT32, _OPT, ""), ("tensor_content", 4, _T_BYTES, _OPT, ""),
        ("float_val", 5, _T_FLOAT, _REP, ""), ("double_val", 6, _T_DOUBLE, _REP, ""),
        ("int_val", 7, _T_INT32, _REP, ""), ("string_val", 8, _T_BYTES, _REP, ""),
        ("int64_val", 10, _T_INT64, _REP, ""), ("bool_val", 11, _T_BOOL, _REP, ""),
    ]),
    ("AttrValue.ListValue", [
        ("s", 2, _T_BYTES, _REP, ""), ("i", 3, _T_INT64, _REP, ""), ("f", 4, _T_FLOAT, _REP, ""),
        ("b", 5, _T_BOOL, _REP, ""), ("type", 6, _T_ENUM, _REP, "DataType"),
        ("shape", 7, _T_MSG, _REP, "TensorShapeProto"), ("tensor", 8, _T_MSG, _REP, "TensorProto"),
    ]),
    ("AttrValue", [
        ("list", 1, _T_MSG, _OPT, "AttrValue.ListValue"), ("s", 2, _T_BYTES, _OPT, ""), ("i", 3, _T_INT64, _OPT, ""),
        ("f", 4, _T_FLOAT, _OPT, ""), ("b", 5, _T_BOOL, _OPT, ""), ("type", 6, _T_ENUM, _OPT, "DataType"),
        ("shape", 7, _T_MSG, _OPT, "TensorShapeProto"), ("tensor", 8, _T_MSG, _OPT, "TensorProto"),
        ("placeholder", 9, _T_STRING, _OPT, ""),
    ]),
    ("NodeDef.AttrEntry", [("key", 1, _T_STRING, _OPT, ""), ("value", 2, _T_MSG, _OPT, "AttrValue")]),
    ("NodeDef", [
        ("name", 1, _T_STRING, _OPT, ""), ("op", 2, _T_STRING, _OPT, ""), ("input", 3, _T_STRING, _REP, ""),
        ("device", 4, _T_STRING, _OPT, ""), ("attr", 5, _T_MSG, _REP, "NodeDef.AttrEntry"),
    ]),
    ("GraphDef", [("node", 1, _T_MSG, _REP, "NodeDef")]),
]
# tensorflow/core/framework/types.proto (the values a frozen detector uses, and their NumPy types)
_DTYPES: dict[str, tuple[int, Any]] = {
    "DT_INVALID": (0, None), "DT_FLOAT": (1, np.float32), "DT_DOUBLE": (2, np.float64), "DT_INT32": (3, np.int32),
    "DT_UINT8": (4, np.uint8), "DT_INT16": (5, np.int16), "DT_INT8": (6, np.int8), "DT_STRING": (7, None),
    "DT_INT64": (9, np.int64), "DT_BOOL": (10, np.bool_), "DT_HALF": (19, np.float16),
}


@cache
def _classes() -> dict[str, Any]:
    """The message classes, built once from a descriptor declared in code."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # type: ignore[import-untyped]

    fdp = descriptor_pb2.FileDescriptorProto(name="jndkit_tf_graph.proto", package=_PACKAGE, syntax="proto3")
    enum = fdp.enum_type.add(name="DataType")
    for name, (number, _) in _DTYPES.items():
        enum.value.add(name=name, number=number)
    built: dict[str, Any] = {}
    tops = {full: fdp.message_type.add(name=full) for full, _ in _MESSAGES if "." not in full}
    for full, fields in _MESSAGES:
        parent, _, nested = full.partition(".")
        msg = tops[full] if not nested else tops[parent].nested_type.add(name=nested)
        if nested == "AttrEntry":
            msg.options.map_entry = True
        for fname, number, ftype, label, tname in fields:
            f = msg.field.add(name=fname, number=number, type=ftype, label=label)
            if tname:
                f.type_name = f".{_PACKAGE}.{tname}"
            if ftype in (_T_FLOAT, _T_DOUBLE, _T_INT32, _T_INT64, _T_BOOL, _T_ENUM) and label == _REP:
                f.options.packed = True
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    for full, _ in _MESSAGES:
        built[full] = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{full}"))
    return built


def read_graph(path: Path | str) -> Any:
    """A ``GraphDef`` message from a binary ``.pb`` or a text ``.pbtxt`` file (by its suffix).

    Raises:
        InputError: the file cannot be read or parsed as a GraphDef.
    """
    p = Path(path)
    graph = _classes()["GraphDef"]()
    try:
        if p.suffix == ".pbtxt":
            from google.protobuf import text_format

            # the text graph names its messages without our package; the field names are the same
            text_format.Parse(p.read_text(), graph, allow_unknown_field=True)
        else:
            graph.ParseFromString(p.read_bytes())
    except (OSError, Exception) as e:  # noqa: BLE001 - protobuf raises its own DecodeError/ParseError types
        raise InputError(f"{p}: cannot read as a TensorFlow GraphDef ({type(e).__name__}: {e})") from None
    return graph


def tensor_value(tensor: Any) -> np.ndarray:
    """A ``TensorProto`` as a NumPy array (``tensor_content`` bytes, or the typed ``*_val`` lists,
    a single value broadcast to the shape as TensorFlow does)."""
    shape = tuple(int(d.size) for d in tensor.tensor_shape.dim)
    name = _classes()["TensorProto"].DESCRIPTOR.fields_by_name["dtype"].enum_type.values_by_number[tensor.dtype].name
    dtype = _DTYPES[name][1]
    if dtype is None:
        raise InputError(f"tensor of type {name} is not supported")
    if tensor.tensor_content:
        raw: np.ndarray = np.frombuffer(tensor.tensor_content, dtype=np.dtype(dtype).newbyteorder("<"))
        out: np.ndarray = raw.reshape(shape).copy()
        return out
    vals: Any = {np.float32: tensor.float_val, np.float64: tensor.double_val, np.int64: tensor.int64_val,
                 np.bool_: tensor.bool_val}.get(dtype, tensor.int_val)
    arr = np.asarray(list(vals), dtype=dtype)
    n = int(np.prod(shape)) if shape else 1
    if arr.size == n:
        return arr.reshape(shape)
    if arr.size == 1:
        return np.full(shape, arr[0], dtype=dtype)
    raise InputError(f"tensor holds {arr.size} values for shape {list(shape)}")


def constants(graph: Any) -> dict[str, np.ndarray]:
    """Every numeric ``Const`` node of ``graph`` by name, as NumPy arrays (string constants, which
    only name things inside TensorFlow's own post-processing, are left out)."""
    string = _DTYPES["DT_STRING"][0]
    return {n.name: tensor_value(n.attr["value"].tensor) for n in graph.node
            if n.op == "Const" and n.attr["value"].tensor.dtype != string}
