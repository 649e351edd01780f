"""Box and landmark geometry of whole-photo face protection (:mod:`jndkit.face.protect`).

Which detection of a protected photo is which clean face (:func:`same_face`), the nearby alignments
and boxes an attack must also hold for (:func:`jitter_landmarks`, :func:`jitter_box`), and the crop
of the photo that reaches the victim (:func:`region`, :func:`chip_bounds`). Boxes are
``(x1, y1, x2, y2)`` in pixels of the photo; landmarks ``[5,2]`` pixel ``(x, y)`` in MTCNN order.
Plain arithmetic on a few numbers per face: no library offers these rules, so they are written here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .align import ChipDetails
from .detect import Face

__all__ = [
    "SAME_FACE_IOU",
    "chip_bounds",
    "int_box",
    "iou",
    "jitter_box",
    "jitter_landmarks",
    "over",
    "region",
    "same_face",
    "shifted",
]

#: A detection of the protected photo belongs to a clean face when their boxes overlap by this IoU
#: (or its centre lies inside the clean box).
SAME_FACE_IOU = 0.3


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes (0 when the union is empty)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def over(clean_box: Sequence[float], box: Sequence[float]) -> bool:
    """``box`` lies over the clean face: IoU >= 0.3, or its centre inside the clean box."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    inside = clean_box[0] <= cx <= clean_box[2] and clean_box[1] <= cy <= clean_box[3]
    return inside or iou(clean_box, box) >= SAME_FACE_IOU


def same_face(clean_box: Sequence[float], found: list[Face]) -> Face | None:
    """The detection (if any) that is the clean face again: best IoU >= 0.3, or centre inside the box."""
    best, best_iou = None, 0.0
    for f in found:
        v = iou(clean_box, f.box)
        if over(clean_box, f.box) and (best is None or v > best_iou):
            best, best_iou = f, v
    return best


def jitter_landmarks(lm: torch.Tensor, n: int) -> list[torch.Tensor]:
    """The landmarks and up to 4 nearby alignments: shifted by +-3 % of the eye distance along the
    diagonal, scaled by 1.04 and 0.96 about their centre (what another detector's landmarks differ by)."""
    lm = lm.detach().float()
    c = lm.mean(dim=0)
    d = 0.03 * float(torch.linalg.vector_norm(lm[1] - lm[0]))
    shift = torch.tensor([d, d])
    return [lm, lm + shift, lm - shift, c + (lm - c) * 1.04, c + (lm - c) * 0.96][: 1 + n]


def jitter_box(box: Sequence[float], shift: float) -> list[tuple[float, float, float, float]]:
    """The box and its neighbours: shifted by ``-shift, 0, +shift`` of its side in x and in y, each
    also scaled by ``1 -+ shift`` about its centre (27 boxes; just the box when ``shift`` is 0).
    MTCNN's last net (ONet) sees the boxes its earlier nets propose, which lie about the final one."""
    if shift <= 0:
        return [(float(box[0]), float(box[1]), float(box[2]), float(box[3]))]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    w, h = box[2] - box[0], box[3] - box[1]
    out = [(float(box[0]), float(box[1]), float(box[2]), float(box[3]))]
    for s in (1.0, 1.0 - shift, 1.0 + shift):
        for dy in (0.0, -shift, shift):
            for dx in (0.0, -shift, shift):
                if s == 1.0 and dx == 0.0 and dy == 0.0:
                    continue
                x, y = cx + dx * w, cy + dy * h
                out.append((x - s * w / 2, y - s * h / 2, x + s * w / 2, y + s * h / 2))
    return out


def shifted(f: Face, dx: int, dy: int) -> Face:
    """``f`` in the coordinates of a crop whose top-left corner is ``(dx, dy)``."""
    b = f.box
    return Face((b[0] - dx, b[1] - dy, b[2] - dx, b[3] - dy), f.prob, f.landmarks - torch.tensor([float(dx), float(dy)]))


def region(rects: list[tuple[float, float, float, float]], w: int, h: int, grid: int = 16) -> tuple[int, int, int, int]:
    """A crop ``(x1, y1, x2, y2)`` holding every rectangle with a margin of a quarter of its side plus
    16 px, its corners on a 16-px grid (so JPEG blocks fall where they fall in the whole photo),
    clipped to the photo."""
    xs1, ys1, xs2, ys2 = [], [], [], []
    for r in rects:
        m = 0.25 * max(r[2] - r[0], r[3] - r[1]) + 16
        xs1.append(r[0] - m)
        ys1.append(r[1] - m)
        xs2.append(r[2] + m)
        ys2.append(r[3] + m)
    x1 = max(0, math.floor(min(xs1) / grid) * grid)
    y1 = max(0, math.floor(min(ys1) / grid) * grid)
    x2 = min(w, math.ceil(max(xs2) / grid) * grid)
    y2 = min(h, math.ceil(max(ys2) / grid) * grid)
    return x1, y1, x2, y2


def chip_bounds(d: ChipDetails) -> tuple[float, float, float, float]:
    """Axis-aligned bounds of a chip's rotated rectangle."""
    r = d.rect
    cx, cy = (r[0] + r[2]) / 2, (r[1] + r[3]) / 2
    half = (r[2] - r[0] + 1) / 2 * (abs(math.cos(d.angle)) + abs(math.sin(d.angle)))
    return cx - half, cy - half, cx + half, cy + half


def int_box(box: Sequence[float], w: int, h: int) -> tuple[int, int, int, int]:
    """``box`` grown to whole pixels and clipped to a ``w`` x ``h`` photo (at least one pixel)."""
    x1, y1 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x2, y2 = min(w, math.ceil(box[2])), min(h, math.ceil(box[3]))
    return x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)
