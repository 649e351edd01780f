"""Face detection with facenet-pytorch's MTCNN, and differentiable face probabilities.

MTCNN (Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks", IEEE SPL 2016) runs three nets: PNet slides a 12x12 window over an
image pyramid (scales ``12/min_face_size * factor**k``), RNet rescores 24x24 crops of the
candidates, ONet rescores 48x48 crops and gives 5 landmarks. A face is kept when its
probabilities exceed the thresholds (0.6, 0.7, 0.7). The nets see ``(x*255 - 127.5) * 0.0078125``.

``MTCNN.detect`` runs under ``no_grad`` with NumPy NMS and integer crops, so it is not
differentiable. :meth:`FaceDetector.face_probabilities` re-runs the three nets on a
differentiable image at fixed (detached) boxes, so an attack that hides a face can push the
probabilities below the thresholds.

Weights: ``pnet.pt``, ``rnet.pt``, ``onet.pt`` in the ``facenet_pytorch/data`` folder of the
facenet-pytorch 2.6.0 wheel (``pip install --no-deps facenet-pytorch==2.6.0``); nothing is
downloaded.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError, WeightsNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    from facenet_pytorch import MTCNN

__all__ = ["Face", "FaceDetector", "FaceProbabilities"]

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
            :class:`FaceProbabilities` with ``[N]`` tensors.

        PNet runs on MTCNN's pyramid (``area`` resampling, as MTCNN does); a window at grid cell
        ``(i, j)`` of scale ``s`` covers ``x in [(2j+1)/s, (2j+12)/s]``. RNet and ONet see the squared
        box cropped at integer pixels (clipped to the image, as MTCNN's ``pad``) and resampled with
        ``area`` interpolation.
        """
        self._check_image(image, 4)
        unknown = set(stages) - {"pnet", "rnet", "onet"}
        if unknown:
            raise InputError(f"unknown MTCNN stages {sorted(unknown)}; use pnet, rnet, onet")
        if isinstance(boxes, list):
            box_t = torch.tensor([f.box for f in boxes], dtype=torch.float64).reshape(-1, 4)
        else:
            box_t = boxes.detach().to("cpu", torch.float64).reshape(-1, 4)
        n = box_t.shape[0]
        x255 = image.to(self.device) * 255.0
        zeros = torch.zeros(n, dtype=image.dtype, device=self.device)
        pnet = self._pnet_max(x255, box_t) if "pnet" in stages and n else zeros
        rnet = self._crop_probs(x255, box_t, 24, self.mtcnn.rnet, 1) if "rnet" in stages and n else zeros
        onet = self._crop_probs(x255, box_t, 48, self.mtcnn.onet, 2) if "onet" in stages and n else zeros
        return FaceProbabilities(pnet, rnet, onet, self.thresholds)

    def _pnet_max(self, x255: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        h, w = x255.shape[-2:]
        best: list[torch.Tensor] = []
        for scale in self._scales(h, w):
            size = (int(h * scale + 1), int(w * scale + 1))
            im = F.interpolate(x255, size=size, mode="area")
            _, probs = self.mtcnn.pnet(_net_input(im))
            face = probs[0, 1]  # [h', w']
            gy, gx = face.shape
            cy = (2 * torch.arange(gy, dtype=torch.float64) + 6.5) / scale
            cx = (2 * torch.arange(gx, dtype=torch.float64) + 6.5) / scale
            per_box = []
            for b in boxes:
                iy = torch.nonzero((cy >= b[1]) & (cy <= b[3])).flatten()
                ix = torch.nonzero((cx >= b[0]) & (cx <= b[2])).flatten()
                if len(iy) and len(ix):
                    window = face[int(iy[0]) : int(iy[-1]) + 1, int(ix[0]) : int(ix[-1]) + 1]
                    per_box.append(window.max())
                else:
                    per_box.append(face.new_zeros(()))
            best.append(torch.stack(per_box))
        if not best:
            return x255.new_zeros(boxes.shape[0])
        return torch.stack(best).amax(dim=0)

    def _crop_probs(self, x255: torch.Tensor, boxes: torch.Tensor, size: int, net: Any, prob_index: int) -> torch.Tensor:
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
        out = net(_net_input(torch.cat(crops)))
        return out[prob_index][:, 1]
