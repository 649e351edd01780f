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

The serialisation itself is described and read in :mod:`jndkit.face.dlib_format`.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError, WeightsNotFoundError
from .dlib_format import (
    _INSTALL_HINT,
    DLIB_FACE_MODEL_FILE,
    DlibFormatError,
    DlibLayer,
    read_dlib_net,
)

__all__ = [
    "DLIB_FACE_MODEL_FILE",
    "DlibFaceNet",
    "DlibFormatError",
    "DlibLayer",
    "find_dlib_face_model",
    "load_dlib_face_net",
    "read_dlib_net",
]


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
        out: torch.Tensor = self.aff2(self.conv2(y))
        return out


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
    mean: torch.Tensor  # the input means (R, G, B), a buffer read from the file

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
        out: torch.Tensor = self.fc(x.mean(dim=(2, 3)))
        return out


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
    for unit in cast(list[_Residual], list(net.units)):
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
