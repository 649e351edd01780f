"""Face detection with facenet-pytorch's MTCNN, and differentiable face logits and probabilities.

MTCNN (Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks", IEEE SPL 2016) runs three nets: PNet slides a 12x12 window over an
image pyramid (scales ``12/min_face_size * factor**k``), RNet rescores 24x24 crops of the
candidates, ONet rescores 48x48 crops and gives 5 landmarks. A face is kept when its
probabilities exceed the thresholds (0.6, 0.7, 0.7). The nets see ``(x*255 - 127.5) * 0.0078125``.

``MTCNN.detect`` runs under ``no_grad`` with NumPy NMS and integer crops, so it is not
differentiable. :meth:`FaceDetector.face_logits` re-runs the three nets on a differentiable image
at fixed (detached) boxes, so an attack that hides a face can push them below the thresholds.

Each net ends in a 2-way softmax, so its face probability is ``p = sigmoid(z)`` with ``z`` the
face logit minus the background logit (read before the softmax). ``p > t`` if and only if
``z > log(t / (1 - t))`` (:func:`logit_threshold`). The probabilities of a clearly visible face
saturate (PNet's best window over obama.jpg has ``z = 13.4``, ``1 - p = 1.5e-6``, and the gradient of
``p`` is ``p (1 - p)`` times that of ``z``), so attacks work on ``z``.

Weights: ``pnet.pt``, ``rnet.pt``, ``onet.pt`` in the ``facenet_pytorch/data`` folder of the
facenet-pytorch 2.6.0 wheel (``pip install --no-deps facenet-pytorch==2.6.0``); nothing is
downloaded.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError, WeightsNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    from facenet_pytorch import MTCNN

__all__ = ["Face", "FaceDetector", "FaceLogits", "FaceProbabilities", "logit_threshold"]

_INSTALL_HINT = "install it with `pip install --no-deps facenet-pytorch==2.6.0`"


@dataclass(frozen=True)
class Face:
    """One detected face.

    Attributes:
        box: ``(x1, y1, x2, y2)`` in pixels of the photo.
        prob: ONet face probability.
        landmarks: ``[5,2]`` pixel ``(x, y)``: image-left eye, image-right eye, nose tip,
            left and right mouth corner (MTCNN order; ``kind="mtcnn"`` in :mod:`jndkit.face.align`).
    """

    box: tuple[float, float, float, float]
    prob: float
    landmarks: torch.Tensor


@dataclass(frozen=True)
class FaceProbabilities:
    """Differentiable face probabilities of the three MTCNN nets for ``N`` fixed boxes.

    Attributes:
        pnet: ``[N]`` maximum PNet probability over all pyramid windows whose centre lies in the box.
        rnet: ``[N]`` RNet probability of the box's square crop resized to 24x24.
        onet: ``[N]`` ONet probability of the box's square crop resized to 48x48.
        thresholds: MTCNN's thresholds (PNet, RNet, ONet); the face is hidden from MTCNN once any
            stage falls below its threshold.
    """

    pnet: torch.Tensor
    rnet: torch.Tensor
    onet: torch.Tensor
    thresholds: tuple[float, float, float]

    def margins(self) -> torch.Tensor:
        """``[N,3]`` probability minus threshold per stage (negative = this stage rejects the face)."""
        t = torch.tensor(self.thresholds, dtype=self.pnet.dtype, device=self.pnet.device)
        return torch.stack([self.pnet, self.rnet, self.onet], dim=1) - t


def logit_threshold(p: float) -> float:
    """The logit ``log(p / (1 - p))`` of a probability threshold: ``sigmoid(z) > p`` iff ``z >`` it.

    >>> round(logit_threshold(0.6), 4), round(logit_threshold(0.7), 4)
    (0.4055, 0.8473)
    """
    if not 0.0 < p < 1.0:
        raise InputError(f"a probability threshold must lie in (0, 1) to have a logit, got {p}")
    return math.log(p / (1.0 - p))


@dataclass(frozen=True)
class FaceLogits:
    """Differentiable face logits (face minus background, before the softmax) of the MTCNN nets.

    Attributes:
        pnet: per box, ``[W]`` logits of every PNet window (all pyramid scales) whose centre lies in
            the box (grown by ``grow``); MTCNN keeps a window as a candidate when its logit exceeds
            ``thresholds[0]``.
        rnet: ``[N]`` RNet logit of each box's square crop resized to 24x24.
        onet: ``[N]`` ONet logit of each box's square crop resized to 48x48.
        thresholds: MTCNN's probability thresholds as logits (:func:`logit_threshold`).
    """

    pnet: list[torch.Tensor]
    rnet: torch.Tensor
    onet: torch.Tensor
    thresholds: tuple[float, float, float]

    def margins(self, stages: tuple[str, ...] = ("pnet", "rnet", "onet")) -> list[torch.Tensor]:
        """Per box, the logits minus their thresholds of the asked stages, concatenated: its PNet
        windows, then RNet, then ONet (negative = that net rejects it)."""
        out = []
        for i in range(self.rnet.shape[0]):
            parts = []
            if "pnet" in stages:
                parts.append(self.pnet[i] - self.thresholds[0])
            if "rnet" in stages:
                parts.append(self.rnet[i : i + 1] - self.thresholds[1])
            if "onet" in stages:
                parts.append(self.onet[i : i + 1] - self.thresholds[2])
            out.append(torch.cat(parts))
        return out


_LOGIT_LAYERS = {"pnet": "conv4_1", "rnet": "dense5_1", "onet": "dense6_1"}
"""The layer of each facenet-pytorch net that gives the two class logits (its softmax follows)."""


def _face_logit(net: Any, layer: str, inp: torch.Tensor) -> torch.Tensor:
    """Face minus background logit of ``net`` on ``inp``, read from ``layer`` before the softmax."""
    seen: list[torch.Tensor] = []
    handle = getattr(net, layer).register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        net(inp)
    finally:
        handle.remove()
    z = seen[0]
    return z[:, 1] - z[:, 0]


def _mtcnn_weights_dir() -> Path:
    spec = importlib.util.find_spec("facenet_pytorch")
    for loc in list(spec.submodule_search_locations or []) if spec is not None else []:
        data = Path(loc) / "data"
        if all((data / f"{n}.pt").is_file() for n in ("pnet", "rnet", "onet")):
            return data
    raise WeightsNotFoundError(f"MTCNN weights (facenet_pytorch/data/pnet.pt, rnet.pt, onet.pt) not found; {_INSTALL_HINT}")


def _net_input(x255: torch.Tensor) -> torch.Tensor:
    return (x255 - 127.5) * 0.0078125


def _square(box: torch.Tensor) -> torch.Tensor:
    """MTCNN ``rerec``: grow the shorter side of ``[N,4]`` boxes to a square about the centre."""
    w = box[:, 2] - box[:, 0]
    h = box[:, 3] - box[:, 1]
    side = torch.maximum(w, h)
    x1 = box[:, 0] + w * 0.5 - side * 0.5
    y1 = box[:, 1] + h * 0.5 - side * 0.5
    return torch.stack([x1, y1, x1 + side, y1 + side], dim=1)


class FaceDetector:
    """MTCNN face detector on ``[3,H,W]`` photos in [0,1].

    Args:
        min_face_size: smallest face side in pixels searched for (MTCNN default 20).
        thresholds: PNet, RNet, ONet probability thresholds (default 0.6, 0.7, 0.7).
        factor: scale step of the image pyramid (default 0.709).
        device: torch device of the nets.

    Raises:
        WeightsNotFoundError: facenet-pytorch (and its bundled weights) is not installed.
    """

    def __init__(
        self,
        min_face_size: int = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        device: str | torch.device = "cpu",
    ) -> None:
        if min_face_size < 12:
            raise InputError(f"min_face_size must be >= 12 pixels, got {min_face_size}")
        if not 0 < factor < 1:
            raise InputError(f"factor must lie in (0, 1), got {factor}")
        if len(thresholds) != 3 or not all(0 <= t <= 1 for t in thresholds):
            raise InputError(f"thresholds must be three probabilities, got {thresholds}")
        _mtcnn_weights_dir()  # clear error before facenet_pytorch tries to torch.load
        from facenet_pytorch import MTCNN  # local import: optional dependency

        self.thresholds = (float(thresholds[0]), float(thresholds[1]), float(thresholds[2]))
        self.min_face_size = int(min_face_size)
        self.factor = float(factor)
        self.device = torch.device(device)
        self.mtcnn: MTCNN = MTCNN(
            min_face_size=self.min_face_size,
            thresholds=list(self.thresholds),
            factor=self.factor,
            keep_all=True,
            device=self.device,
        ).eval()
        for p in self.mtcnn.parameters():
            p.requires_grad_(False)

    @staticmethod
    def _check_image(image: torch.Tensor, ndim: int) -> None:
        shape = "[3,H,W]" if ndim == 3 else "[1,3,H,W]"
        if not isinstance(image, torch.Tensor) or image.ndim != ndim or image.shape[-3] != 3:
            got = list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise InputError(f"image must be a tensor of shape {shape}, got {got}")
        if ndim == 4 and image.shape[0] != 1:
            raise InputError(f"image must hold one photo [1,3,H,W], got {list(image.shape)}")
        if min(image.shape[-2:]) < 12:
            raise InputError(f"image must be at least 12x12 pixels, got {list(image.shape[-2:])}")

    def detect(self, image: torch.Tensor, min_prob: float = 0.0) -> list[Face]:
        """Faces in ``image`` ``[3,H,W]`` in [0,1], by decreasing probability.

        The image is rounded to 8 bits first (what a saved file holds) and given to the stock
        ``MTCNN.detect``. ``min_prob`` drops faces whose ONet probability is lower (MTCNN itself
        keeps everything above its last threshold, 0.7). Returns an empty list when there is none.
        """
        self._check_image(image, 3)
        if not 0.0 <= min_prob <= 1.0:
            raise InputError(f"min_prob must lie in [0,1], got {min_prob}")
        img = torch.round(image.detach().clamp(0, 1) * 255.0).permute(1, 2, 0).to(torch.uint8).cpu().numpy()
        with torch.no_grad():
            boxes, probs, points = self.mtcnn.detect(img, landmarks=True)
        if boxes is None:
            return []
        faces = []
        for b, p, lm in zip(boxes, probs, points):
            box = np.asarray(b, dtype=np.float64)
            if float(p) >= min_prob:
                faces.append(
                    Face(
                        (float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                        float(p),
                        torch.from_numpy(np.asarray(lm, dtype=np.float32).reshape(5, 2)),
                    )
                )
        return sorted(faces, key=lambda f: -f.prob)

    def candidates(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The boxes stock MTCNN hands to its RNet and ONet on ``image`` ``[3,H,W]`` (rounded to 8 bits).

        Runs :meth:`detect`'s pipeline and records the (squared) boxes that facenet-pytorch crops for
        its second and third net. Returns ``{"rnet": [K1,4], "onet": [K2,4]}`` (``(x1,y1,x2,y2)``,
        float64; empty when a stage is not reached). A face is found only if ONet accepts one of the
        ``onet`` boxes, so hiding it means pushing ONet's logit below its threshold on all of them.
        """
        import facenet_pytorch.models.utils.detect_face as stock

        seen: list[torch.Tensor] = []
        original = stock.pad

        def recording_pad(boxes: torch.Tensor, w: int, h: int) -> Any:
            seen.append(boxes[:, :4].detach().to("cpu", torch.float64).clone())
            return original(boxes, w, h)

        stock.pad = recording_pad
        try:
            self.detect(image)
        finally:
            stock.pad = original
        empty = torch.zeros(0, 4, dtype=torch.float64)
        return {"rnet": seen[0] if seen else empty, "onet": seen[1] if len(seen) > 1 else empty}

    def _scales(self, h: int, w: int) -> list[float]:
        """MTCNN's pyramid scales for an ``h x w`` image."""
        m = 12.0 / self.min_face_size
        minl = min(h, w) * m
        scales: list[float] = []
        scale = m
        while minl >= 12:
            scales.append(scale)
            scale *= self.factor
            minl *= self.factor
        return scales

    def face_probabilities(
        self,
        image: torch.Tensor,
        boxes: torch.Tensor | list[Face],
        stages: tuple[str, ...] = ("pnet", "rnet", "onet"),
    ) -> FaceProbabilities:
        """Face probabilities of PNet, RNet and ONet at fixed boxes, differentiable w.r.t. ``image``.

        Args:
            image: ``[1,3,H,W]`` in [0,1] (may require grad).
            boxes: ``[N,4]`` boxes ``(x1, y1, x2, y2)`` or the faces from :meth:`detect`
                (detached; typically the clean photo's detections).
            stages: which nets to run; skipped ones return zeros (PNet's pyramid is the costly one).

        Returns:
            :class:`FaceProbabilities` with ``[N]`` tensors: ``sigmoid`` of :meth:`face_logits`
            (PNet: of its highest window). They saturate at 1 for a clear face; attack the logits.
        """
        lg = self.face_logits(image, boxes, stages)
        n = lg.rnet.shape[0]
        zeros = torch.zeros(n, dtype=image.dtype, device=self.device)
        pnet = (torch.stack([w.max() if w.numel() else w.new_tensor(-math.inf) for w in lg.pnet]).sigmoid()
                if "pnet" in stages and n else zeros)
        rnet = lg.rnet.sigmoid() if "rnet" in stages and n else zeros
        onet = lg.onet.sigmoid() if "onet" in stages and n else zeros
        return FaceProbabilities(pnet, rnet, onet, self.thresholds)

    def face_logits(
        self,
        image: torch.Tensor,
        boxes: torch.Tensor | list[Face],
        stages: tuple[str, ...] = ("pnet", "rnet", "onet"),
        grow: float = 0.0,
    ) -> FaceLogits:
        """Face logits of PNet, RNet and ONet at fixed boxes, differentiable w.r.t. ``image``.

        Args:
            image: ``[1,3,H,W]`` in [0,1] (may require grad).
            boxes: ``[N,4]`` boxes ``(x1, y1, x2, y2)`` or the faces from :meth:`detect` (detached).
            stages: which nets to run; skipped ones give empty PNet windows and zeros.
            grow: PNet windows count for a box when their centre lies in the box grown by this
                fraction of its side on each side.

        PNet runs on MTCNN's pyramid (``area`` resampling, as MTCNN does); a window at grid cell
        ``(i, j)`` of scale ``s`` covers ``x in [(2j+1)/s, (2j+12)/s]``. RNet and ONet see the squared
        box cropped at integer pixels (clipped to the image, as MTCNN's ``pad``) and resampled with
        ``area`` interpolation.
        """
        self._check_image(image, 4)
        unknown = set(stages) - {"pnet", "rnet", "onet"}
        if unknown:
            raise InputError(f"unknown MTCNN stages {sorted(unknown)}; use pnet, rnet, onet")
        if grow < 0:
            raise InputError(f"grow must be >= 0, got {grow}")
        if isinstance(boxes, list):
            box_t = torch.tensor([f.box for f in boxes], dtype=torch.float64).reshape(-1, 4)
        else:
            box_t = boxes.detach().to("cpu", torch.float64).reshape(-1, 4)
        n = box_t.shape[0]
        x255 = image.to(self.device) * 255.0
        zeros = torch.zeros(n, dtype=image.dtype, device=self.device)
        if "pnet" in stages and n:
            side = (box_t[:, 2:] - box_t[:, :2]) * grow
            pnet = self._pnet_windows(x255, torch.cat([box_t[:, :2] - side, box_t[:, 2:] + side], dim=1))
        else:
            pnet = [x255.new_zeros(0) for _ in range(n)]
        rnet = self._crop_logits(x255, box_t, 24, "rnet") if "rnet" in stages and n else zeros
        onet = self._crop_logits(x255, box_t, 48, "onet") if "onet" in stages and n else zeros
        t = tuple(logit_threshold(p) for p in self.thresholds)
        return FaceLogits(pnet, rnet, onet, (t[0], t[1], t[2]))

    def _pnet_windows(self, x255: torch.Tensor, boxes: torch.Tensor) -> list[torch.Tensor]:
        h, w = x255.shape[-2:]
        per_box: list[list[torch.Tensor]] = [[] for _ in range(boxes.shape[0])]
        for scale in self._scales(h, w):
            size = (int(h * scale + 1), int(w * scale + 1))
            im = F.interpolate(x255, size=size, mode="area")
            face = _face_logit(self.mtcnn.pnet, _LOGIT_LAYERS["pnet"], _net_input(im))[0]  # [h', w']
            gy, gx = face.shape
            cy = (2 * torch.arange(gy, dtype=torch.float64) + 6.5) / scale
            cx = (2 * torch.arange(gx, dtype=torch.float64) + 6.5) / scale
            for k, b in enumerate(boxes):
                iy = torch.nonzero((cy >= b[1]) & (cy <= b[3])).flatten()
                ix = torch.nonzero((cx >= b[0]) & (cx <= b[2])).flatten()
                if len(iy) and len(ix):
                    per_box[k].append(face[int(iy[0]) : int(iy[-1]) + 1, int(ix[0]) : int(ix[-1]) + 1].flatten())
        return [torch.cat(p) if p else x255.new_zeros(0) for p in per_box]

    def _crop_logits(self, x255: torch.Tensor, boxes: torch.Tensor, size: int, stage: str) -> torch.Tensor:
        h, w = x255.shape[-2:]
        sq = _square(boxes).trunc().long()
        crops = []
        for x1, y1, x2, y2 in sq.tolist():
            x1, y1 = max(x1, 1), max(y1, 1)
            x2, y2 = min(x2, w), min(y2, h)
            if x2 <= x1 - 1 or y2 <= y1 - 1:
                raise InputError(f"box ({x1},{y1},{x2},{y2}) lies outside the {w}x{h} image")
            crop = x255[..., y1 - 1 : y2, x1 - 1 : x2]
            crops.append(F.interpolate(crop, size=(size, size), mode="area"))
        net = getattr(self.mtcnn, stage)
        return _face_logit(net, _LOGIT_LAYERS[stage], _net_input(torch.cat(crops)))
